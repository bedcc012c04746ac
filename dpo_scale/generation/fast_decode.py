"""Savers of memory traffic and wasted arithmetic for batched decoding (first measured on the 2-core box with
SmolLM2, 64 rows, 150 cached tokens, per layer and step: repeating the KV heads 12.7 ms, attention 7 ms,
growing the cache by concatenation 4 ms).

* `sdpa_gqa_attention`: transformers' `sdpa` integration repeats every key/value head for the query heads
  that share it whenever an attention mask is passed (`use_gqa_in_sdpa` requires `attention_mask is None`,
  a restriction of the CUDA kernels that transformers 5.19 applies on CPU too). torch's CPU kernel takes
  the mask and grouped heads together (`enable_gqa=True`), so the copy is skipped. Same numbers.
* `PreallocatedLayer`: a KV cache layer that reserves room for the whole answer once and writes each new
  token in place, instead of `DynamicLayer`'s `torch.cat` that copies the whole cache every step.
* `grouped_prefill`: prompts are prefilled in groups of similar length, each group only as wide as its own
  longest prompt, and written right-aligned into one left-padded cache. In a batch sorted by length one long
  prompt used to widen every row (the benchmark's first batch: width 60 for a mean of 23 tokens; 38% of all
  prefilled positions were padding).
* `chunked_lm_head`: the vocabulary projection as GEMMs of LM_HEAD_CHUNK vocabulary rows instead of one. With
  SmolLM2's 49152 x 576 head, one GEMM of 64 rows ran at ~50 GFLOP/s (it took ~40% of a decode step), in
  2048-row slices at ~90 (the layers' own GEMMs run at ~125). Each logit is the same dot product over the
  same hidden size: equal up to the kernel's last-bit rounding (bitwise equal for SmolLM2's 24 slices of
  2048; the benchmark's 64 greedy answers were identical with and without slicing).
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import Cache, DynamicLayer

GQA_ATTENTION = "dpo_scale_sdpa_gqa"
# A row starts a new prefill group when its prompt is shorter than this share of the group's longest: at most
# 1/4 padding per row, at the price of one more forward call per group (its fixed per-call cost: not measured).
PREFILL_GROUP_RATIO = 0.75
LM_HEAD_CHUNK = 2048  # vocabulary rows per GEMM (1024: 1.3x, 2048: 1.8x, 8192: 1.35x vs one GEMM, 64 rows)


def sdpa_gqa_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    is_causal: bool | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None and causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GQA_ATTENTION, sdpa_gqa_attention)
    AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)  # same mask format as `sdpa`


_register()


@contextlib.contextmanager
def gqa_attention(model: torch.nn.Module):
    """Use `sdpa_gqa_attention` inside the block when the model runs sdpa on CPU (elsewhere: unchanged, as
    CUDA's fused kernels take no masked grouped heads)."""
    previous = model.config._attn_implementation  # read-only use; transformers has no public getter
    if previous != "sdpa" or model.device.type != "cpu":
        yield
        return
    model.set_attn_implementation(GQA_ATTENTION)  # public PreTrainedModel method; the name is registered above
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def chunked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """F.linear(x, weight, bias), computed `chunk` output features at a time."""
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    for start in range(0, weight.shape[0], chunk):
        part = slice(start, start + chunk)
        out[..., part] = torch.nn.functional.linear(x, weight[part], None if bias is None else bias[part])
    return out


@contextlib.contextmanager
def chunked_lm_head(model: torch.nn.Module, chunk: int | None = None):
    """Inside the block the model's output projection runs as `chunked_linear` (on CPU, for a plain Linear head
    with more than two chunks of vocabulary; elsewhere unchanged). Only the head's own product changes: logit
    scaling or soft-capping that a model applies after it still runs in the model's forward."""
    chunk = chunk or LM_HEAD_CHUNK
    head = model.get_output_embeddings()
    if (model.device.type != "cpu" or type(head) is not torch.nn.Linear or head.out_features <= 2 * chunk
            or "forward" in vars(head)):  # a hooked forward (accelerate's device_map/offload): leave it alone
        yield
        return
    head.forward = lambda x: chunked_linear(x, head.weight, head.bias, chunk)
    try:
        yield
    finally:
        del head.forward  # back to nn.Linear.forward


class PreallocatedLayer(DynamicLayer):
    """`DynamicLayer` whose keys/values are views into buffers sized for prompt + `extra` tokens."""

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self._allocate(key_states, key_states.shape[0], key_states.shape[-2])
        new = key_states.shape[-2]
        if self.length + new > self._k.shape[-2]:  # more than reserved: grow (not expected)
            pad = (0, 0, 0, max(new, self.extra))
            self._k = torch.nn.functional.pad(self._k, pad)
            self._v = torch.nn.functional.pad(self._v, pad)
        self._k[:, :, self.length : self.length + new] = key_states
        self._v[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._set_views()
        return self.keys, self.values

    def _allocate(self, like: torch.Tensor, batch: int, tokens: int) -> None:
        """Buffers for `batch` rows of `tokens` + `extra` positions, with `like`'s heads, head size, dtype, device."""
        self.lazy_initialization(like, like)
        shape = (batch, like.shape[1], tokens + self.extra, like.shape[-1])
        self._k, self._v = like.new_empty(shape), like.new_empty(shape)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self._set_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (in that order) in place: only rows whose source differs are copied, and only their
        filled positions, into the same buffers. With `fill_from_end`'s indices that is one row per finished one,
        instead of a gather that reallocates and copies every row's whole reserved length."""
        if not self.is_initialized:
            return
        indices = indices.to(self._k.device)
        moved = (indices != torch.arange(len(indices), device=indices.device)).nonzero().squeeze(-1)
        if len(moved):
            filled = slice(0, self.length)
            # the right-hand side is gathered first: safe even when sources and targets overlap
            self._k[moved, :, filled] = self._k[indices[moved], :, filled]
            self._v[moved, :, filled] = self._v[indices[moved], :, filled]
        self._k, self._v = self._k[: len(indices)], self._v[: len(indices)]
        self._set_views()

    def place_rows(self, index: torch.Tensor, source: PreallocatedLayer, shared: int, width: int, rows: int) -> None:
        """Copy `source`'s rows (prefix of `shared` tokens + a group's tokens) into rows `index` of this
        `rows`-row layer, right-aligned in a `width`-token window after the prefix; the slots left of them are
        zeroed (padding: masked in attention, but uninitialised memory could hold NaN, and 0 * NaN is NaN).
        The layer then holds `shared + width` tokens (rows not placed yet are filled by later calls)."""
        if not self.is_initialized:
            self._allocate(source._k, rows, shared + width)
        start = shared + width - (source.length - shared)
        for mine, theirs in ((self._k, source._k), (self._v, source._v)):
            mine[index, :, :shared] = theirs[:, :, :shared]
            mine[index, :, shared:start] = 0
            mine[index, :, start : shared + width] = theirs[:, :, shared : source.length]
        self.length = shared + width
        self._set_views()

    def _set_views(self) -> None:
        """Expose the filled part of the buffers as the layer's keys/values (what attention reads)."""
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("PreallocatedLayer is for left-to-right decoding only")


def fill_from_end(done: torch.Tensor) -> torch.Tensor:
    """Rows to keep when the `done` rows leave a batch: the first rows that are still alive stay where they are,
    and each gap they leave is filled by one of the alive rows from the end (one row moves per gap)."""
    alive = (~done).nonzero().squeeze(-1)
    n = len(alive)
    keep = torch.arange(n, device=done.device)
    holes = done[:n].nonzero().squeeze(-1)
    keep[holes] = alive[alive >= n]
    return keep


def preallocated_cache(num_layers: int, extra_tokens: int) -> Cache:
    return Cache(layers=[PreallocatedLayer(extra_tokens) for _ in range(num_layers)])


def prefill_prefix(model: torch.nn.Module, prefix_ids: list[int], cache: Cache, device: torch.device) -> None:
    """Run the prompts' shared prefix once, as one row, into `cache` (only its last logits are computed)."""
    model(input_ids=torch.tensor([prefix_ids], device=device), past_key_values=cache, use_cache=True,
          logits_to_keep=1)


def prefill_groups(lengths: list[int], ratio: float = PREFILL_GROUP_RATIO) -> list[list[int]]:
    """Rows grouped for prefill: longest first, a new group whenever a row is shorter than `ratio` times its
    group's longest row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if not groups or lengths[i] < ratio * lengths[groups[-1][0]]:
            groups.append([])
        groups[-1].append(i)
    return groups


def grouped_prefill(
    model: torch.nn.Module, prefix_ids: list[int], input_ids: torch.Tensor, rest_mask: torch.Tensor,
    position_ids: torch.Tensor, extra_tokens: int,
) -> tuple[Cache, torch.Tensor]:
    """Prefill left-padded prompts (`input_ids`, `rest_mask`: rows x width, after a shared `prefix_ids`) group by
    group (`prefill_groups`), each group only as wide as its longest prompt. Returns a preallocated cache laid
    out as if the whole batch had been prefilled at full width (each row's tokens right-aligned, padding slots
    zeroed and masked), with room for `extra_tokens` more, and each row's last logits (float32)."""
    rows, width = input_ids.shape
    device, layers = input_ids.device, model.config.num_hidden_layers
    shared = len(prefix_ids)
    prefix = None
    if shared:  # run once, its keys/values copied into every group
        prefix = preallocated_cache(layers, 0)
        prefill_prefix(model, prefix_ids, prefix, device)
    cache = preallocated_cache(layers, extra_tokens)  # allocated for shared + width by the first place_rows
    logits: torch.Tensor | None = None
    for group in prefill_groups(rest_mask.sum(-1).tolist()):
        index = torch.tensor(group, device=device)
        w = int(rest_mask[index].sum(-1).max())
        part = preallocated_cache(layers, w if shared else 0)
        if prefix is not None:
            for layer, source in zip(part.layers, prefix.layers, strict=True):
                layer.update(source.keys.expand(len(group), -1, -1, -1), source.values.expand(len(group), -1, -1, -1))
        mask = torch.cat([rest_mask.new_ones((len(group), shared)), rest_mask[index, width - w :]], dim=1)
        out = model(input_ids=input_ids[index, width - w :], attention_mask=mask,
                    position_ids=position_ids[index, width - w :], past_key_values=part, use_cache=True,
                    logits_to_keep=1)
        last = out.logits[:, -1, :].float()
        if logits is None:
            logits = last.new_empty((rows, last.shape[-1]))
        logits[index] = last
        for target, source in zip(cache.layers, part.layers, strict=True):
            target.place_rows(index, source, shared, width, rows)
    return cache, logits  # type: ignore[return-value]
