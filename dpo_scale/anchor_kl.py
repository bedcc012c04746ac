"""DPO with a KL anchor: keep the trained model's next-token distributions on ordinary prompts equal to the base's.

Anchor rows (ordinary prompts with the base's own answers, see `anchor_prompts`) used as chosen == rejected pairs
only reach the SFT term, which pulls up one sampled token per position; the rest of the distribution is free to
move, and greedy answers of a small model flip on near-ties. Here each training micro-batch also scores a batch of
anchors with the adapter on and off and adds `anchor_kl_weight * KL(base || trained)` per answer token, over the
full vocabulary: the quantity the evaluation's drift column measures, on prompts it does not use.

The reference is the same model with the adapter disabled (no copy), as for DPO's own reference.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from dpo_scale.errors import DpoScaleError
from dpo_scale.teacher_forcing import TeacherForcedBatch, kl_per_position, pad_id, pad_right


def tokenize_anchor(tokenizer, row: dict, max_length: int | None) -> tuple[list[int], int]:
    """Token ids of prompt + answer as the chat template renders them, and the prompt's length in tokens
    (the answer's tokens follow it; clipped to the ids when max_length cuts into the prompt)."""
    prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    full_ids = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=True, return_dict=False)
    if list(full_ids[:len(prompt_ids)]) != list(prompt_ids):
        raise DpoScaleError("anchor rows: the chat template renders the prompt differently with the answer appended; "
                            "cannot locate the answer tokens (set anchor_kl_weight: 0)")
    full_ids = list(full_ids)[:max_length] if max_length else list(full_ids)
    return full_ids, min(len(prompt_ids), len(full_ids))


class AnchoredDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer plus `weight * KL(base || trained)` on anchor answers at every training micro-step.

    `anchor_rows` must not be empty: `train.read_pairs` refuses anchor_kl_weight > 0 without anchor rows."""

    def __init__(self, *args, anchor_rows: list[dict], anchor_kl_weight: float, anchor_batch_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor_kl_weight = anchor_kl_weight
        self.anchor_batch_size = anchor_batch_size
        self._anchor_pad = pad_id(self.processing_class)
        tokenized = [tokenize_anchor(self.processing_class, row, self.args.max_length) for row in anchor_rows]
        # Each rank walks its own share, so that N processes see N different anchor batches per step.
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self._anchors = tokenized[rank::world] or tokenized
        self._anchor_calls: int | None = None

    def _next_anchor_batch(self) -> TeacherForcedBatch:
        if self._anchor_calls is None:  # start where a resumed run left off: same batches as an uninterrupted one
            self._anchor_calls = self.state.global_step * self.args.gradient_accumulation_steps
        n, size = len(self._anchors), min(self.anchor_batch_size, len(self._anchors))
        start = self._anchor_calls * size
        epoch, offset = divmod(start, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch)).tolist()
        picked = [order[(offset + i) % n] for i in range(size)]
        self._anchor_calls += 1
        return pad_right([self._anchors[i] for i in picked], self._anchor_pad)

    def anchor_kl(self, model) -> torch.Tensor:
        batch = self._next_anchor_batch()
        device = self.accelerator.device
        ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
        positions = batch.answer_positions.to(device)  # the logits that predict answer tokens
        with torch.no_grad(), use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None):
            ref_logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[positions]
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[positions]
        return kl_per_position(ref_logits, logits).mean()

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
