"""Run the layers below the adapter once per batch, not once per pass.

With LoRA on the upper decoder layers only (`lora_layers_to_transform`), the adapter-on (policy) and adapter-off
(reference) passes of one batch compute the same hidden states up to the lowest adapted layer: nothing below it
has an adapter, and both passes read the same frozen weights. Training makes exactly such pairs of passes on the
same inputs, one after the other: TRL's DPO loss (policy, then reference: `DPOTrainer._compute_loss`) and the KL
anchor's batches (reference, then policy: `anchor_kl.py`). Here the decoder keeps the input of its lowest adapted
layer from the first pass of a batch, and the second pass on the same inputs starts from it, skipping the layers
below. With adapters on layers 15-29 of a 30-layer model, the second pass runs half the layers.

The skip uses the decoder's public structure (`get_decoder()`, its `embed_tokens` and `layers`): the second pass
runs with `layers` cut to the adapted ones and the embedding's output replaced by the kept hidden states. A decoder
whose forward transforms the embeddings between the lookup and the first layer would compute something else (in
transformers 5.19 Gemma scales them inside its embedding module, which the skip replaces, so it is not one), so the
first skipped pass of a run is checked against the full pass and sharing turns itself off, with a warning, where
they differ. The kept hidden states never need gradients (nothing below the adapter trains); where they do
(gradient checkpointing makes the embeddings' output require grad) nothing is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            a.dtype == b.dtype and torch.equal(a, b)
    return a is b or a == b


class SharedTrunk:
    """The decoder of `model` with its layers below `first_adapted` run once for two consecutive passes of the
    same inputs (see the module's docstring). `install` wraps the decoder's forward; `remove` undoes it."""

    # The forward arguments that decide the hidden states below the adapter.
    KEYS = ("input_ids", "attention_mask", "position_ids")

    def __init__(self, model, first_adapted: int):
        self.decoder = model.get_decoder()
        self.layers = self.decoder.layers
        self.first = first_adapted
        self.kept: tuple[dict, torch.Tensor] | None = None  # the inputs of the last full pass, and its hidden states
        self.checked = False
        self.saved_passes = 0
        self._forward = None
        self._patched_before = None

    def install(self) -> SharedTrunk:
        self._patched_before = self.decoder.__dict__.get("forward")  # another instance-level patch, kept under ours
        self._forward = self.decoder.forward
        self.decoder.forward = self._shared_forward
        return self

    def remove(self) -> None:
        if self._forward is not None:
            if self._patched_before is None:
                del self.decoder.forward  # the class's forward again
            else:
                self.decoder.forward = self._patched_before
            self._forward = None
        self.kept = None

    def _shared_forward(self, *args, **kwargs):
        if args or kwargs.get("inputs_embeds") is not None or kwargs.get("past_key_values") is not None:
            return self._forward(*args, **kwargs)  # positional calls, embeddings or a cache: not ours to share
        inputs = {key: kwargs.get(key) for key in self.KEYS}
        if self.kept is not None and all(_same(inputs[k], self.kept[0][k]) for k in self.KEYS):
            hidden, self.kept = self.kept[1], None
            if not self.checked:
                return self._checked_skip(hidden, kwargs)
            self.saved_passes += 1
            with starting_at(self.decoder, self.first, hidden):
                return self._forward(**kwargs)
        with keeping_input_of(self.layers[self.first]) as kept:
            out = self._forward(**kwargs)
        self.kept = (inputs, kept[0]) if len(kept) == 1 and not kept[0].requires_grad else None
        return out

    def _checked_skip(self, hidden: torch.Tensor, kwargs: dict):
        """The first skipped pass, against the full one: the full pass's output is returned either way."""
        with torch.no_grad(), starting_at(self.decoder, self.first, hidden):
            skipped = self._forward(**kwargs).last_hidden_state
        out = self._forward(**kwargs)
        full = out.last_hidden_state.detach()
        tolerance = 1e-2 if full.dtype in (torch.bfloat16, torch.float16) else 1e-4
        if torch.allclose(skipped.float(), full.float(), atol=tolerance, rtol=tolerance):
            self.checked = True
            log.info("shared trunk: layers 0-%d run once per pair of passes (checked against the full pass)",
                     self.first - 1)
        else:
            log.warning("shared trunk: the pass from layer %d differs from the full pass (max %.3g); off",
                        self.first, (skipped.float() - full.float()).abs().max().item())
            self.remove()
        return out

@contextmanager
def keeping_input_of(layer: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """The hidden states that enter `layer` in the block's passes, appended to the yielded list."""
    kept: list[torch.Tensor] = []

    def keep(module, args, kwargs):
        kept.append(args[0] if args else kwargs["hidden_states"])

    handle = layer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield kept
    finally:
        handle.remove()


@contextmanager
def starting_at(decoder, first: int, hidden: torch.Tensor) -> Iterator[None]:
    """The decoder's passes in the block start at its layer `first` from `hidden`: the embedding's output is replaced
    by it, and the layers below are cut."""
    layers = decoder.layers
    handle = decoder.embed_tokens.register_forward_hook(lambda module, args, output: hidden)
    decoder.layers = torch.nn.ModuleList(layers[first:])
    try:
        yield
    finally:
        decoder.layers = layers
        handle.remove()


def lowest_adapted_layer(model) -> int | None:
    """The index of the lowest decoder layer holding a LoRA module (None: no adapter, or none found)."""
    try:
        layers = model.get_decoder().layers
    except (AttributeError, NotImplementedError):
        return None
    for index, layer in enumerate(layers):
        if any("lora_" in name for name, _ in layer.named_modules()):
            return index
    return None


def _decoder(model):
    """The model's decoder when its layers can be cut (`starting_at`), else None."""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    if not hasattr(decoder, "embed_tokens") or not isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        return None
    return decoder


def _same_weights(module: torch.nn.Module, other: torch.nn.Module) -> bool:
    mine, theirs = dict(module.named_parameters()), dict(other.named_parameters())
    return mine.keys() == theirs.keys() and all(_same(mine[name], theirs[name]) for name in mine)


def same_lower_layers(model, other) -> int:
    """How many decoder layers, from the lowest up, hold the same weights under the same names in both models, whose
    token embeddings must be the same too (0 otherwise, or where a decoder cannot be cut). A model merged from an
    adapter on the upper layers shares every layer below the adapter with its base, so a pass of the base gives the
    hidden states from which the merged model's pass on the same inputs can start (`keeping_input_of`,
    `starting_at`). At most all layers but the top one."""
    decoders = _decoder(model), _decoder(other)
    if None in decoders or not _same_weights(decoders[0].embed_tokens, decoders[1].embed_tokens):
        return 0
    shared = 0
    for mine, theirs in zip(decoders[0].layers, decoders[1].layers, strict=False):
        if not _same_weights(mine, theirs):
            break
        shared += 1
    return min(shared, len(decoders[0].layers) - 1, len(decoders[1].layers) - 1)


def share_trunk(model, enabled: bool = True) -> SharedTrunk | None:
    """Install a SharedTrunk on `model` when its lowest adapted layer is above 0; None when there is nothing to
    share (adapters from layer 0, no adapter) or the model has no decoder layers to cut."""
    if not enabled:
        return None
    first = lowest_adapted_layer(model)
    if not first or _decoder(model) is None:
        return None
    return SharedTrunk(model, first).install()
