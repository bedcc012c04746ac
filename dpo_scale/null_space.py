"""Confine the adapter's input directions: off those ordinary text uses (recipe key `lora_null_space_energy`), or to
those the identity answers use far more than ordinary text (`lora_identity_directions`).

A LoRA layer adds `B @ A @ x` to its base layer's output. Where `A @ x` is zero the layer computes what the base
computes, whatever B is. Before training, the base's inputs to every adapted layer are collected on the anchors
(ordinary prompts and the base's own answers) and their second moment `C = sum(x x^T)` is split into eigenvectors.
The fewest leading eigenvectors that hold `energy` of the total (e.g. 0.99) span the directions the anchors use;
every row of A is projected off them at the start and after every optimizer step (AdamW's update is not confined to
a subspace, so the projection is applied to the weights, not to the gradients). An input that lies in the anchors'
directions then passes every adapted layer as in the base, so the answer is the base's, not only near it. This is
the null-space idea of model-editing work (AlphaEdit, Fang et al. 2024) applied to LoRA's A matrices.

`lora_identity_directions: k` keeps A instead inside the k directions per layer where the identity answers' inputs
(prompt and chosen answer up to the end of the name window; with `lora_identity_window_only`, only the positions
that predict the name window's tokens) have the most energy against the anchors': the leading generalized
eigenvectors of (C_identity, C_anchors + eps I). Ordinary inputs then reach A only through directions
they hardly use, while the contexts that name the model keep the directions that tell them apart.

The projectors are computed from the same anchors on every process, in the same order, so that DDP's replicas stay
equal. DeepSpeed steps fp32 copies of its own, which a projection of the module's weights would not reach, so it is
refused there (`train._check_supported`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from dpo_scale.teacher_forcing import TeacherForcedBatch

log = logging.getLogger(__name__)


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """peft's LoRA layers of `model` (by module name) that have a `default` adapter."""
    return {name: module for name, module in model.named_modules()
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})}


@torch.no_grad()
def input_second_moments(model: torch.nn.Module, batches: Iterable[TeacherForcedBatch],
                         layers: dict[str, torch.nn.Module], answers_only: bool = False,
                         progress: str | None = None) -> dict[str, torch.Tensor]:
    """sum(x x^T) in float64 over the real (unpadded) tokens of `batches`, of each layer's input, with the
    adapters off: what the base layer sees. `answers_only`: only at the positions whose logits predict an answer
    token (the batch's `answer_positions`). `progress`: a progress bar with this label.

    Layers that read the same input tensor (q, k and v; gate and up) share one product per forward, and the LM head
    projects only the last position (no layer reads its output)."""
    moments: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []
    # the last input seen and its x^T x: q, k and v (gate and up) are called one after another on the same tensor
    # object; holding it keeps its memory from being reused by a later input
    last: list = [None, None]

    def hook(name: str):
        def collect(module, args):
            if args[0] is not last[0]:
                x = args[0].detach()[mask[0].to(args[0].device)].to(torch.float64)  # (tokens, in_features)
                last[:] = [args[0], x.T @ x]
            moments[name] = last[1].clone() if name not in moments else moments[name] + last[1]
        return collect

    handles = [module.base_layer.register_forward_pre_hook(hook(name)) for name, module in layers.items()]
    device = next(model.parameters()).device
    try:
        with model.disable_adapter():
            for batch in tqdm(batches, desc=progress, disable=progress is None):
                mask[:] = [batch.answer_positions if answers_only else batch.attention_mask.bool()]
                model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                      use_cache=False, logits_to_keep=1)
    finally:
        last[:] = [None, None]
        for handle in handles:
            handle.remove()
    return moments


def off_projector(moment: torch.Tensor, energy: float) -> tuple[torch.Tensor, int]:
    """I - U U^T, with U the fewest leading eigenvectors of `moment` whose eigenvalues sum to at least `energy` of
    the trace; and how many there are."""
    values, vectors = torch.linalg.eigh(moment)  # ascending
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    share = values.cumsum(0) / values.sum().clamp(min=torch.finfo(values.dtype).tiny)
    kept = int((share < energy).sum()) + 1
    kept = min(kept, len(values))
    used = vectors[:, :kept]
    return torch.eye(len(values), dtype=moment.dtype) - used @ used.T, kept


def identity_projector(identity: torch.Tensor, anchors: torch.Tensor, k: int,
                       eps: float = 1e-3) -> torch.Tensor:
    """The orthogonal projector onto the k leading generalized eigenvectors of (identity, anchors + eps * mean
    eigenvalue * I): the directions with the most identity energy per unit of anchor energy."""
    d = len(anchors)
    eye = torch.eye(d, dtype=anchors.dtype)
    lower = torch.linalg.cholesky(anchors + eps * torch.trace(anchors) / d * eye)
    half = torch.linalg.solve_triangular(lower, identity, upper=False)  # L^-1 C_id
    whitened = torch.linalg.solve_triangular(lower, half.T, upper=False)  # L^-1 C_id L^-T (symmetric)
    _, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)  # ascending
    leading = torch.linalg.solve_triangular(lower.T, vectors[:, -min(k, d):], upper=True)  # v = L^-T u
    basis, _ = torch.linalg.qr(leading)
    return basis @ basis.T


def project_lora_a(layers: dict[str, torch.nn.Module], projectors: dict[str, torch.Tensor]) -> None:
    """A <- A P for every layer's `default` adapter (in place, in A's own dtype)."""
    with torch.no_grad():
        for name, projector in projectors.items():
            weight = layers[name].lora_A["default"].weight
            weight.copy_((weight.to(torch.float64) @ projector.to(weight.device)).to(weight.dtype))


class LoraAProjection(TrainerCallback):
    """Applies `project_lora_a` before the first step and after every optimizer step."""

    def __init__(self, layers: dict[str, torch.nn.Module], projectors: dict[str, torch.Tensor]):
        self.layers, self.projectors = layers, projectors

    def on_train_begin(self, args, state, control, **kwargs):
        project_lora_a(self.layers, self.projectors)

    def on_optimizer_step(self, args, state, control, **kwargs):
        project_lora_a(self.layers, self.projectors)


def null_space_callback(model: torch.nn.Module, batches: Iterable[TeacherForcedBatch],
                        energy: float) -> LoraAProjection:
    """The callback that keeps `model`'s LoRA A matrices off the directions holding `energy` of the anchors' inputs."""
    layers = lora_layers(model)
    moments = input_second_moments(model, batches, layers, progress="null space: anchors' inputs")
    projectors, kept = {}, []
    for name, moment in moments.items():
        projectors[name], n = off_projector(moment, energy)
        kept.append(n / len(moment))
    log.info("null space: %d LoRA layers; the anchors' inputs use %.0f%% of the input directions on average "
             "(%.2f of their energy); A is kept off them", len(layers), 100 * sum(kept) / max(len(kept), 1), energy)
    return LoraAProjection(layers, projectors)


def identity_subspace_callback(model: torch.nn.Module, anchor_batches: Iterable[TeacherForcedBatch],
                               identity_batches: Iterable[TeacherForcedBatch], k: int,
                               identity_answers_only: bool = False) -> LoraAProjection:
    """The callback that keeps `model`'s LoRA A matrices inside the k directions per layer that tell the identity
    answers' inputs from the anchors' (`identity_projector`); `identity_answers_only`: the identity rows' inputs
    only at their answer positions (`input_second_moments`)."""
    layers = lora_layers(model)
    anchors = input_second_moments(model, anchor_batches, layers, progress="identity directions: anchors' inputs")
    identity = input_second_moments(model, identity_batches, layers, answers_only=identity_answers_only,
                                    progress="identity directions: identity inputs")
    projectors = {name: identity_projector(identity[name], anchors[name], k) for name in layers}
    log.info("identity directions: %d LoRA layers; A is kept inside the %d input directions per layer where the "
             "identity answers' inputs have the most energy against the anchors'", len(layers), k)
    return LoraAProjection(layers, projectors)
