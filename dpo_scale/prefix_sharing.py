"""One forward per batch of preference pairs as a prefix tree: the tokens its sequences share run once.

TRL's DPOTrainer scores a batch as rows [chosen 1..B; rejected 1..B], so each pair's prompt and the answer up to the
first differing token (here: the name, about 80% of a pair's tokens after the name window's cut) run through the
model twice, in the policy pass and again in the reference pass; every row also repeats the chat template's
opening, and the shorter rows carry padding. Here the whole batch becomes one prefix tree (dpo_scale/prefix_tree.py):
a token shared with the same history runs once, under per-sequence attention, and every logit is the one TRL's rows
give (up to float rounding); tests/test_prefix_sharing.py checks log-probs and gradients against the unpacked
forward. Prefix sharing for DPO: Wang and Hegde, arXiv 2410.20305 (1.1-1.5x reported).

The last shared token of a pair is placed twice, once in each branch: its logit predicts the chosen answer's next
token in one and the rejected answer's in the other, and TRL's fused LM head scores one label per position.

How it plugs in: TRL 1.x patches the model's forward with a fused LM head (`trl.trainer.utils.add_fused_lm_head`);
DPOTrainer's loss and reference pass call it as `model(..., labels=..., fused_lm_head=True)` on the [chosen;
rejected] batch and read per-token fields (log_probs, entropy, mean_logits, is_top1, ...). `share_pair_prefixes`
wraps that forward: it packs the batch, calls TRL's forward over the tree's nodes with pre-shifted labels
(`shift_labels`, its own keyword), and lays each per-token field back out as the [chosen; rejected] rows TRL
expects. TRL's losses, metrics and reference handling run unchanged. Every other call (the KL anchors, generation)
goes straight through.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpo_scale.prefix_tree import PackedTree, close_enough, pack_tree, tree_attention_on

log = logging.getLogger(__name__)

# The attention implementations whose result tree_attention reproduces (plain softmax attention); flash-attention
# kernels compute the same but are not checked here, and other kernels may do more (sinks, softcapping).
PLAIN_ATTENTION = ("eager", "sdpa")


@dataclass
class PackedPairs:
    """A [chosen; rejected] batch packed as one prefix tree, and the map back."""

    tree: PackedTree
    source: torch.Tensor  # (2 * pairs, seq_len - 1): the node of each unpacked position
    valid: torch.Tensor  # (2 * pairs, seq_len - 1) bool: the unpacked position has a label


def right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's length when the mask is ones then zeros (TRL's preference collator pads on the right), else None."""
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    return lengths


def pack_pairs(input_ids: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> PackedPairs:
    """Pack rows [chosen 1..B; rejected 1..B] (right-padded to `seq_len`, `labels` -100 outside the answers) as one
    prefix tree (dpo_scale/prefix_tree.py)."""
    rows, seq_len = input_ids.shape
    lengths = lengths.tolist()
    ids_cpu, labels_cpu = input_ids.cpu(), labels.cpu()
    sequences, next_tokens = [], []
    for row in range(rows):
        n = lengths[row]
        sequences.append(ids_cpu[row, :n].tolist())
        # position t predicts token t + 1 where that one is labelled; the last token predicts nothing
        following = labels_cpu[row, 1:n].tolist()
        next_tokens.append([None if label == -100 else label for label in following] + [None])
    tree = pack_tree(sequences, next_tokens)
    source = tree.paths[:, : seq_len - 1].clamp(min=0)
    if source.shape[1] < seq_len - 1:
        source = F.pad(source, (0, seq_len - 1 - source.shape[1]))
    valid = labels_cpu[:, 1:] != -100
    device = input_ids.device
    return PackedPairs(tree.to(device), source.to(device), valid.to(device))


def unpack(field: torch.Tensor, packed: PackedPairs) -> torch.Tensor:
    """A per-token output over the tree's nodes, laid out as TRL's [chosen; rejected] rows (zero where no label)."""
    gathered = field.reshape(-1)[packed.source.reshape(-1)].view(packed.source.shape)
    return torch.where(packed.valid, gathered, torch.zeros((), dtype=field.dtype, device=field.device))


def attention_implementation(model) -> str | None:
    # transformers keeps the implementation a model runs on its config (`_attn_implementation`, what
    # `from_pretrained(attn_implementation=...)` sets); there is no public getter in transformers 5.19.
    return getattr(model.config, "_attn_implementation", None)


def share_pair_prefixes(model) -> bool:
    """Wrap `model`'s TRL fused-LM-head forward (installed by DPOTrainer) so that DPO batches run as prefix trees;
    returns False, leaving the model as it is, where its attention is not one tree_attention reproduces. The first
    packed forward is checked against TRL's own; where they differ, packing turns itself off with a warning."""
    implementation = attention_implementation(model)
    if implementation not in PLAIN_ATTENTION:
        log.warning("prefix_sharing: attention '%s' is not one of %s; chosen and rejected run as TRL runs them",
                    implementation, ", ".join(PLAIN_ATTENTION))
        return False
    fused_forward = model.forward
    state = {"checked": False, "on": True}

    @functools.wraps(fused_forward)
    def forward(*args, fused_lm_head: bool = False, labels=None, **kwargs):
        input_ids, attention_mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        plain = (not state["on"] or not fused_lm_head or args or labels is None or input_ids is None
                 or attention_mask is None or attention_mask.dim() != 2 or input_ids.shape[0] % 2
                 or "shift_labels" in kwargs)
        lengths = None if plain else right_padded_lengths(attention_mask)
        if lengths is None:
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        out = _packed_forward(model, fused_forward, pack_pairs(input_ids, labels, lengths), kwargs)
        if state["checked"]:
            return out
        state["checked"] = True
        with torch.no_grad():
            expected = fused_forward(fused_lm_head=True, labels=labels, **kwargs)["log_probs"]
        if close_enough(out["log_probs"].detach(), expected):
            log.info("prefix_sharing: each DPO batch runs as one prefix tree (checked against TRL's rows)")
            return out
        log.warning("prefix_sharing: the packed forward differs from TRL's rows (max %.3g); off",
                    (out["log_probs"].detach().float() - expected.float()).abs().max().item())
        state["on"] = False
        return fused_forward(fused_lm_head=True, labels=labels, **kwargs)

    model.forward = forward
    return True


def _packed_forward(model, fused_forward, packed: PackedPairs, kwargs: dict):
    """TRL's fused forward over the tree's nodes, its per-token fields laid back out as TRL's rows."""
    tree = packed.tree
    kwargs = {**kwargs, "input_ids": tree.input_ids, "position_ids": tree.position_ids,
              "attention_mask": tree.attention_mask}
    with tree_attention_on(model):
        out = fused_forward(fused_lm_head=True, shift_labels=tree.shift_labels, **kwargs)
    fields = {name: unpack(value, packed) if torch.is_tensor(value) and value.shape == tree.input_ids.shape
              else value for name, value in out.items()}
    # `loss` as the unpacked forward gives it (DPOTrainer reads the per-token fields, not this): its mean NLL over
    # the unpacked labels, plus whatever TRL added to the NLL (an MoE router loss)
    packed_nll = -out["log_probs"].sum() / (tree.shift_labels != -100).sum().clamp(min=1)
    fields["loss"] = out["loss"] - packed_nll - fields["log_probs"].sum() / packed.valid.sum().clamp(min=1)
    return type(out)(**fields)
