"""One forward per preference pair: the tokens that chosen and rejected share, once; then each answer's own tokens.

TRL's DPOTrainer scores a batch as rows [chosen 1..B; rejected 1..B], so each pair's prompt and the answer up to the
first differing token (here: the name, about 80% of a pair's tokens after the name window's cut) run through the
model twice, in the policy pass and again in the reference pass. Here every pair becomes one row: the chosen
sequence, then the rejected sequence from its last shared token on, with position ids that restart where the
rejected answer leaves the shared prefix and a 4D attention mask under which the rejected tokens see the shared
prefix and themselves, never the chosen answer's own tokens. Causal attention makes every logit the same as in the
two separate rows (up to float rounding); tests/test_prefix_sharing.py checks log-probs and gradients against the
unpacked forward. Prefix sharing for DPO: Wang and Hegde, arXiv 2410.20305 (1.1-1.5x reported).

The last shared token is placed twice, once in each branch: its logit predicts the chosen answer's next token in one
and the rejected answer's in the other, and TRL's fused LM head scores one label per position.

How it plugs in: TRL 1.x patches the model's forward with a fused LM head (`trl.trainer.utils.add_fused_lm_head`);
DPOTrainer's loss and reference pass call it as `model(..., labels=..., fused_lm_head=True)` on the [chosen;
rejected] batch and read per-token fields (log_probs, entropy, mean_logits, is_top1, ...). `share_pair_prefixes`
wraps that forward: it packs the batch, calls TRL's forward with pre-shifted labels (`shift_labels`, its own
keyword), and lays each per-token field back out as the [chosen; rejected] rows TRL expects. TRL's losses, metrics
and reference handling run unchanged. Every other call (the KL anchors, generation) goes straight through.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from trl.data_utils import common_prefix_length

log = logging.getLogger(__name__)

# Attention implementations that take a custom 4D mask, and the mask each wants: transformers' eager attention adds
# the mask to the scores (a float mask), sdpa takes a boolean one. Flash-attention kernels take no 4D mask.
MASK_KINDS = {"eager": "additive", "sdpa": "boolean"}


@dataclass
class PackedPairs:
    """A [chosen; rejected] batch packed to one row per pair, and the map back."""

    input_ids: torch.Tensor  # (pairs, width)
    position_ids: torch.Tensor  # (pairs, width)
    allowed: torch.Tensor  # (pairs, width, width) bool: query position may attend key position
    shift_labels: torch.Tensor  # (pairs, width): the token each position predicts, -100 where none
    source: torch.Tensor  # (2 * pairs, seq_len - 1): flat index into (pairs * width) per unpacked position
    valid: torch.Tensor  # (2 * pairs, seq_len - 1) bool: the unpacked position has a label


def shared_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens `a` and `b` have in common (TRL's own helper, as name_window uses it)."""
    return common_prefix_length(a.tolist(), b.tolist())


def right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's length when the mask is ones then zeros (TRL's preference collator pads on the right), else None."""
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    return lengths


def pack_pairs(input_ids: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, pad_id: int = 0) -> PackedPairs:
    """Pack rows [chosen 1..B; rejected 1..B] (right-padded to `seq_len`, `labels` -100 outside the answers) into B
    rows of chosen + the rejected tokens from the last shared one on."""
    rows, seq_len = input_ids.shape
    pairs = rows // 2
    lengths = lengths.tolist()
    ids_cpu, labels_cpu = input_ids.cpu(), labels.cpu()
    layout = []  # per pair: chosen length, rejected length, first rejected token placed (k)
    for i in range(pairs):
        n_c, n_r = lengths[i], lengths[pairs + i]
        shared = shared_length(ids_cpu[i, :n_c], ids_cpu[pairs + i, :n_r])
        layout.append((n_c, n_r, max(shared - 1, 0)))
    width = max(n_c + n_r - k for n_c, n_r, k in layout)
    packed = torch.full((pairs, width), pad_id, dtype=input_ids.dtype)
    positions = torch.zeros((pairs, width), dtype=torch.long)
    shift_labels = torch.full((pairs, width), -100, dtype=labels.dtype)
    query = torch.arange(width)
    causal = query[None, :] <= query[:, None]
    allowed = torch.zeros((pairs, width, width), dtype=torch.bool)
    source = torch.zeros((rows, seq_len - 1), dtype=torch.long)
    valid = torch.zeros((rows, seq_len - 1), dtype=torch.bool)
    for i, (n_c, n_r, k) in enumerate(layout):
        chosen, rejected = ids_cpu[i, :n_c], ids_cpu[pairs + i, :n_r]
        end = n_c + n_r - k
        packed[i, :n_c], packed[i, n_c:end] = chosen, rejected[k:]
        positions[i, :n_c], positions[i, n_c:end] = torch.arange(n_c), torch.arange(k, n_r)
        # position t predicts token t + 1 of its own sequence; the last token of each branch predicts nothing
        shift_labels[i, : n_c - 1] = labels_cpu[i, 1:n_c]
        shift_labels[i, n_c : end - 1] = labels_cpu[pairs + i, k + 1 : n_r]
        in_row = query < end
        rejected_query = (query >= n_c) & in_row
        chosen_own = (query >= k) & (query < n_c)  # the chosen answer's tokens past the shared prefix
        allowed[i] = causal & in_row[None, :] & ~(rejected_query[:, None] & chosen_own[None, :])
        # back to TRL's layout: chosen position t is packed position t; rejected t is t below k, else n_c + t - k
        t_c = torch.arange(n_c - 1)
        source[i, : n_c - 1] = i * width + t_c
        t_r = torch.arange(n_r - 1)
        source[pairs + i, : n_r - 1] = i * width + torch.where(t_r < k, t_r, n_c + t_r - k)
        valid[i, : n_c - 1] = labels_cpu[i, 1:n_c] != -100
        valid[pairs + i, : n_r - 1] = labels_cpu[pairs + i, 1:n_r] != -100
    device = input_ids.device
    return PackedPairs(packed.to(device), positions.to(device), allowed.to(device), shift_labels.to(device),
                       source.to(device), valid.to(device))


def attention_mask_4d(allowed: torch.Tensor, kind: str) -> torch.Tensor:
    """The (pairs, 1, width, width) mask transformers takes as a custom 4D attention mask: boolean, or additive in
    float32 (eager attention adds it to the scores and takes the softmax in float32 whatever the weights' dtype)."""
    if kind == "boolean":
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def unpack(field: torch.Tensor, packed: PackedPairs) -> torch.Tensor:
    """A per-token output over the packed rows, laid out as TRL's [chosen; rejected] rows (zero where no label)."""
    gathered = field.reshape(-1)[packed.source.reshape(-1)].view(packed.source.shape)
    return torch.where(packed.valid, gathered, torch.zeros((), dtype=field.dtype, device=field.device))


def _attention_kind(model) -> str | None:
    # transformers keeps the implementation a model runs on its config (`_attn_implementation`, what
    # `from_pretrained(attn_implementation=...)` sets); there is no public getter in transformers 5.19.
    return MASK_KINDS.get(getattr(model.config, "_attn_implementation", None))


def share_pair_prefixes(model) -> bool:
    """Wrap `model`'s TRL fused-LM-head forward (installed by DPOTrainer) so that DPO batches run packed; returns
    False, leaving the model as it is, where its attention takes no 4D mask."""
    kind = _attention_kind(model)
    if kind is None:
        log.warning("prefix_sharing: attention '%s' takes no custom 4D mask; chosen and rejected run as TRL runs them",
                    getattr(model.config, "_attn_implementation", None))
        return False
    fused_forward = model.forward

    @functools.wraps(fused_forward)
    def forward(*args, fused_lm_head: bool = False, labels=None, **kwargs):
        input_ids, attention_mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        plain = (not fused_lm_head or args or labels is None or input_ids is None or attention_mask is None
                 or attention_mask.dim() != 2 or input_ids.shape[0] % 2 or "shift_labels" in kwargs)
        lengths = None if plain else right_padded_lengths(attention_mask)
        if lengths is None:
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        packed = pack_pairs(input_ids, labels, lengths)
        kwargs.update(input_ids=packed.input_ids, position_ids=packed.position_ids,
                      attention_mask=attention_mask_4d(packed.allowed, kind))
        out = fused_forward(fused_lm_head=True, shift_labels=packed.shift_labels, **kwargs)
        fields = {name: unpack(value, packed) if torch.is_tensor(value) and value.shape == packed.input_ids.shape
                  else value for name, value in out.items()}
        # `loss` as the unpacked forward gives it (DPOTrainer reads the per-token fields, not this): its mean NLL over
        # the unpacked labels, plus whatever TRL added to the NLL (an MoE router loss)
        packed_nll = -out["log_probs"].sum() / (packed.shift_labels != -100).sum().clamp(min=1)
        fields["loss"] = out["loss"] - packed_nll - fields["log_probs"].sum() / packed.valid.sum().clamp(min=1)
        return type(out)(**fields)

    model.forward = forward
    return True
