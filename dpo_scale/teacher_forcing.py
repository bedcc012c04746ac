"""Scoring answers under teacher forcing: batch prompt + answer rows, pick the logits that predict answer tokens,
and compare two models' next-token distributions there.

Shared by the KL anchor during training (`anchor_kl`) and the drift measures of the evaluation (`evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TeacherForcedBatch:
    input_ids: torch.Tensor  # (rows, width), right-padded
    attention_mask: torch.Tensor  # 1 on real tokens, 0 on padding
    # Over logits positions (same width as input_ids): True where logit t predicts an answer token (t + 1).
    answer_positions: torch.Tensor


def pad_id(tokenizer) -> int:
    """The id to pad with; its value never matters (masked, and after the real tokens), it only has to exist."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def pad_right(rows: list[tuple[list[int], int]], pad_id: int) -> TeacherForcedBatch:
    """Right-pad rows of (token ids of prompt + answer, prompt length) into one batch.

    Right padding keeps each row's real tokens at the same positions as when scored alone (a causal model's
    logits at a position depend only on the tokens up to it), so batching does not change the scores."""
    width = max(len(seq) for seq, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    answer_positions = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (seq, prompt_len) in enumerate(rows):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, :len(seq)] = 1
        # logit t predicts token t + 1: answer tokens prompt_len .. len - 1 are predicted at prompt_len - 1 .. len - 2
        answer_positions[row, max(prompt_len - 1, 0):len(seq) - 1] = True
    return TeacherForcedBatch(input_ids, attention_mask, answer_positions)


def output_head(model) -> torch.nn.Module:
    """The LM head of `model` under its wrappers (DDP's `module`, peft's base model, which forwards the call)."""
    return getattr(model, "module", model).get_output_embeddings()


def answer_logits(model, batch: TeacherForcedBatch, device, packed: bool = False) -> torch.Tensor:
    """One forward of `batch` on `device`: the logits that predict its answer tokens, rows one after another.

    The LM head runs on those positions only: the forward keeps the hidden states from the batch's first answer
    column on (transformers' `logits_to_keep`), and a pre-hook on the head picks the answer positions out of them,
    so neither the prompts nor the padding after shorter answers (a third of an anchor batch's columns) are
    projected onto the vocabulary. The model's own forward still applies whatever follows its head (a logit scale,
    softcapping), elementwise.

    `packed`: the rows run as one prefix tree (dpo_scale/prefix_tree.py): the tokens they share once, no padding."""
    if packed:
        return _packed_answer_logits(model, batch, device)
    ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
    columns = batch.answer_positions.any(dim=0).nonzero()
    first = int(columns[0]) if len(columns) else 0
    return _head_on(model, batch.answer_positions[:, first:].to(device),
                    input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=ids.shape[1] - first)


def _head_on(model, kept: torch.Tensor, **inputs) -> torch.Tensor:
    """The model's logits at the `kept` positions of its last `logits_to_keep` hidden states, in row-major order."""

    def kept_positions_only(_head, args):
        return (args[0][kept].unsqueeze(0), *args[1:])

    handle = output_head(model).register_forward_pre_hook(kept_positions_only)
    try:
        return model(**inputs).logits[0]
    finally:
        handle.remove()


def _packed_answer_logits(model, batch: TeacherForcedBatch, device) -> torch.Tensor:
    from dpo_scale.prefix_tree import pack_tree, tree_attention_on

    lengths = batch.attention_mask.sum(dim=1).tolist()
    sequences, next_tokens = [], []
    for row, n in enumerate(lengths):
        seq = batch.input_ids[row, :n].tolist()
        read = batch.answer_positions[row, :n].tolist()
        sequences.append(seq)
        next_tokens.append([seq[t + 1] if read[t] and t + 1 < n else None for t in range(n)])
    tree = pack_tree(sequences, next_tokens)
    labelled = tree.shift_labels != -100
    # each answer position's node, rows one after another; a node that several rows share is projected once
    width = tree.paths.shape[1]
    wanted = tree.paths[batch.answer_positions[:, :width]]
    rank = labelled.reshape(-1).long().cumsum(0) - 1
    columns = labelled.any(dim=0).nonzero()
    first = int(columns[0]) if len(columns) else 0
    tree = tree.to(device)
    with tree_attention_on(model):
        logits = _head_on(model, labelled[:, first:].to(device), input_ids=tree.input_ids,
                          position_ids=tree.position_ids, attention_mask=tree.attention_mask, use_cache=False,
                          logits_to_keep=tree.input_ids.shape[1] - first)
    return logits[rank[wanted].to(device)]


def kl_per_position(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(ref || policy) of the full next-token distributions at each position (last dim: vocabulary).

    Taken in float32 from log_softmax of the logits (bf16 keeps ~3 significant digits: too coarse for the small
    KLs measured here); no reduction: one value per position."""
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def top_two(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's top token and its lead over the runner-up, in nats (log-prob gaps equal logit gaps)."""
    best = logits.float().topk(2, dim=-1)
    return best.indices[..., 0], best.values[..., 0] - best.values[..., 1]


def lead_shortfall(top: torch.Tensor, target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """How far, per position, the policy's lead of token `top` over its own best other token falls short of `target`
    (nats; 0 where it leads by that much). `top` and `target`: shape (positions,).

    Greedy answers keep a token exactly when it stays the top one, and the base's near-ties (top-2 gap < 0.1 nats
    at 70% of SmolLM2's ordinary first sentences) flip under a KL too small to see: the KL is second order in
    small changes, this is first order."""
    logits = logits.float()
    top = top.unsqueeze(-1)
    lead = logits.gather(-1, top).squeeze(-1) - logits.scatter(-1, top, float("-inf")).amax(-1)
    return torch.relu(target - lead)


@dataclass
class TopK:
    """A next-token distribution kept as its k most likely tokens plus one bucket for all the others."""

    indices: torch.Tensor  # (positions, k) token ids
    logp: torch.Tensor  # (positions, k) their log-probabilities, float32
    tail_logp: torch.Tensor  # (positions,) log of the probability of every other token together

    def rows(self, counts: list[int]) -> list[TopK]:
        return [TopK(i, lp, t) for i, lp, t in zip(self.indices.split(counts), self.logp.split(counts),
                                                   self.tail_logp.split(counts), strict=True)]

    @staticmethod
    def cat(parts: list[TopK]) -> TopK:
        return TopK(torch.cat([p.indices for p in parts]), torch.cat([p.logp for p in parts]),
                    torch.cat([p.tail_logp for p in parts]))


def _tail_logp(logp: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """log of the total probability outside `indices`, computed without cancellation (1 - sum would lose it)."""
    return logp.scatter(-1, indices, float("-inf")).logsumexp(-1)


def top_k(logits: torch.Tensor, k: int) -> TopK:
    """The distribution at each position (rows of `logits`) reduced to its top k tokens and a tail bucket."""
    logp = F.log_softmax(logits.float(), dim=-1)
    top = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return TopK(top.indices, top.values, _tail_logp(logp, top.indices))


def kl_top_k(ref: TopK, logits: torch.Tensor) -> torch.Tensor:
    """KL(ref || policy) per position over ref's top-k tokens and one bucket for the rest of the vocabulary.

    This is the exact KL between the two distributions coarse-grained onto those k + 1 outcomes: never more than
    the full KL (merging outcomes cannot increase a divergence), equal to it when k covers the vocabulary; the
    gap is the KL hidden inside the tail, which a base's top 64 leaves small (docs: benchmarks/RESULTS.md)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    top = (ref.logp.exp() * (ref.logp - logp.gather(-1, ref.indices))).sum(-1)
    if ref.indices.shape[-1] >= logp.shape[-1]:  # no tail: the full KL (and no -inf - -inf in the graph)
        return top
    policy_tail = _tail_logp(logp, ref.indices)
    return top + ref.tail_logp.exp() * (ref.tail_logp - policy_tail)
