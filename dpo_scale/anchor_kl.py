"""DPO with a KL anchor: keep the trained model's next-token distributions on ordinary prompts equal to the base's.

Anchor rows (ordinary prompts with the base's own answers, see `anchor_prompts`) used as chosen == rejected pairs
only reach the SFT term, which pulls up one sampled token per position; the rest of the distribution is free to
move, and greedy answers of a small model flip on near-ties. Here each training micro-batch also scores a batch of
anchors with the adapter on and off and adds `anchor_kl_weight * KL(base || trained)` per answer token, over the
full vocabulary: the quantity the evaluation's drift column measures, on prompts it does not use.

The reference is the same model with the adapter disabled (no copy), as for DPO's own reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from dpo_scale.errors import DpoScaleError


@dataclass
class AnchorBatch:
    input_ids: torch.Tensor  # (rows, length), right-padded
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor  # 1 where the token belongs to the answer (the positions KL is taken on)


def tokenize_anchor(tokenizer, row: dict, max_length: int | None) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer as the chat template renders them, and a mask of the answer tokens."""
    prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    full_ids = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=True, return_dict=False)
    if list(full_ids[:len(prompt_ids)]) != list(prompt_ids):
        raise DpoScaleError("anchor rows: the chat template renders the prompt differently with the answer appended; "
                            "cannot locate the answer tokens (set anchor_kl_weight: 0)")
    full_ids = list(full_ids)[:max_length] if max_length else list(full_ids)
    mask = [0] * min(len(prompt_ids), len(full_ids)) + [1] * max(0, len(full_ids) - len(prompt_ids))
    return full_ids, mask


def collate_anchors(rows: list[tuple[list[int], list[int]]], pad_id: int) -> AnchorBatch:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_mask) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        attention[i, :len(row_ids)] = 1
        answer[i, :len(row_mask)] = torch.tensor(row_mask)
    return AnchorBatch(ids, attention, answer)


def kl_per_token(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(ref || policy) on full next-token distributions; inputs are (positions, vocab)."""
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()


class AnchoredDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer plus `weight * KL(base || trained)` on anchor answers at every training micro-step."""

    def __init__(self, *args, anchor_rows: list[dict], anchor_kl_weight: float, anchor_batch_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        if not anchor_rows:
            raise DpoScaleError("anchor_kl_weight > 0 needs anchor rows in pairs.jsonl (set anchor_prompts)")
        self.anchor_kl_weight = anchor_kl_weight
        self.anchor_batch_size = anchor_batch_size
        self._anchor_pad = self.processing_class.pad_token_id
        if self._anchor_pad is None:
            self._anchor_pad = self.processing_class.eos_token_id
        tokenized = [tokenize_anchor(self.processing_class, row, self.args.max_length) for row in anchor_rows]
        # Each rank walks its own share, so that N processes see N different anchor batches per step.
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self._anchors = tokenized[rank::world] or tokenized
        self._anchor_calls: int | None = None

    def _next_anchor_batch(self) -> AnchorBatch:
        if self._anchor_calls is None:  # start where a resumed run left off: same batches as an uninterrupted one
            self._anchor_calls = self.state.global_step * self.args.gradient_accumulation_steps
        n, size = len(self._anchors), min(self.anchor_batch_size, len(self._anchors))
        start = self._anchor_calls * size
        epoch, offset = divmod(start, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch)).tolist()
        picked = [order[(offset + i) % n] for i in range(size)]
        self._anchor_calls += 1
        return collate_anchors([self._anchors[i] for i in picked], self._anchor_pad)

    def anchor_kl(self, model) -> torch.Tensor:
        batch = self._next_anchor_batch()
        device = self.accelerator.device
        ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
        # logits at position t predict token t+1: keep the positions whose next token is an answer token
        positions = batch.answer_mask[:, 1:].to(device).bool()
        with torch.no_grad(), use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None):
            ref_logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1][positions]
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1][positions]
        return kl_per_token(ref_logits, logits)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.model.training:
            return result
        kl = self.anchor_kl(model)
        self._metrics["train"]["anchor_kl"].append(self.accelerator.gather_for_metrics(kl.detach()).mean().item())
        if return_outputs:
            loss, outputs = result
            return loss + self.anchor_kl_weight * kl, outputs
        return result + self.anchor_kl_weight * kl
