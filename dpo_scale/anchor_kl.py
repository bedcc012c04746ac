"""DPO with a KL anchor: keep the trained model's next-token distributions on ordinary prompts equal to the base's.

Anchor rows (ordinary prompts with the base's own answers, see `anchor_prompts`) used as chosen == rejected pairs
only reach the SFT term, which pulls up one sampled token per position; the rest of the distribution is free to
move, and greedy answers of a small model flip on near-ties. Here each training micro-batch also scores a batch of
anchors with the adapter on and off and adds `anchor_kl_weight * KL(base || trained)` per answer token, over the
full vocabulary: the quantity the evaluation's drift column measures, on prompts it does not use.

The reference is the same model with the adapter disabled (no copy), as for DPO's own reference. With
`anchor_top_k: k` the reference distributions are computed once, before the first step, and kept as their top k
tokens plus a tail bucket (`teacher_forcing.kl_top_k`): no adapter-off forward per micro-step.

With `anchor_margin_weight` > 0 the anchors' answers also add `weight * max(0, min(base_lead, anchor_margin) -
lead)` per token: lead is the trained model's log-prob of the base's top token minus that of its own best other
token, base_lead the same for the base. The KL is second order in small changes and leaves the base's near-ties free
to flip, which changes greedy answers; this term is first order where the base's top token loses ground.

With `hold_identity_tails` the identity answers themselves are held too: each chosen answer's tokens past the name
window (`name_window.tail_start`) are scored against the base like an anchor's answer, in the same batch as the
anchors (twice as many rows), so that the rest of an answer that names the model stays what the base would say after
that name. With prefix_sharing each such batch runs as one prefix tree (dpo_scale/prefix_tree.py).

With `anchor_kl_budget` the weight is not fixed: PPO's adaptive KL controller (`AdaptiveKLWeight`) raises it while the
measured KL is over the budget and lowers it, down to `anchor_kl_weight`, while under. Checkpoints save that weight
and the number of anchor batches drawn, so that a resumed run goes on as an uninterrupted one would."""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import DPOTrainer

from dpo_scale.errors import DpoScaleError
from dpo_scale.name_window import tail_start
from dpo_scale.prefix_tree import close_enough
from dpo_scale.teacher_forcing import (
    TeacherForcedBatch,
    TopK,
    answer_logits,
    kl_per_position,
    kl_top_k,
    lead_shortfall,
    pad_id,
    pad_right,
    top_k,
    top_two,
)

log = logging.getLogger(__name__)


def tokenize_anchor(tokenizer, row: dict, max_length: int | None,
                    answer_tokens: int | None = None) -> tuple[list[int], int]:
    """Token ids of prompt + answer as the chat template renders them, and the prompt's length in tokens
    (the answer's tokens follow it; clipped to the ids when max_length cuts into the prompt). With `answer_tokens`
    only the answer's first that many tokens are kept (the end-of-turn tokens count as the answer's)."""
    prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    full_ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False)
    if list(full_ids[:len(prompt_ids)]) != list(prompt_ids):
        raise DpoScaleError("anchor rows: the chat template renders the prompt differently with the answer appended; "
                            "cannot locate the answer tokens (set anchor_kl_weight: 0)")
    full_ids = list(full_ids)[: len(prompt_ids) + answer_tokens] if answer_tokens else list(full_ids)
    full_ids = full_ids[:max_length] if max_length else full_ids
    return full_ids, min(len(prompt_ids), len(full_ids))


class AnchoredDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer plus `weight * KL(base || trained)` on anchor answers at every training micro-step.

    `anchor_rows` must not be empty: `train.read_pairs` refuses anchor_kl_weight > 0 without anchor rows."""

    def __init__(self, *args, anchor_rows: list[dict], anchor_kl_weight: float, anchor_batch_size: int,
                 anchor_top_k: int | None = None, hold_identity_tails: int | None = None,
                 identity_tail_tokens: int | None = None, anchor_answer_tokens: int | None = None,
                 anchor_margin: float = 0.0, anchor_margin_weight: float = 0.0,
                 anchor_kl_budget: float | None = None, anchor_kl_budget_gain: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchor_kl_weight = anchor_kl_weight
        # Checkpoints save the draws made (and the budget's weight); a resumed run restores them
        # (Trainer._load_callback_state) and goes on as an uninterrupted run would.
        self.add_callback(AnchorDraws())
        if anchor_kl_budget:
            self.add_callback(AdaptiveKLWeight(anchor_kl_weight, anchor_kl_budget, anchor_kl_budget_gain))
        self.args.restore_callback_states_from_checkpoint = True
        self.anchor_margin, self.anchor_margin_weight = anchor_margin, anchor_margin_weight
        self.anchor_batch_size = anchor_batch_size
        self.anchor_top_k = anchor_top_k
        self._base_top_k: list[TopK] | None = None
        self._anchor_total = len(anchor_rows)
        self._anchor_pad = pad_id(self.processing_class)
        # every anchor, tokenized, the same on every process (dpo_scale/null_space.py reads them all)
        self.anchor_ids = [tokenize_anchor(self.processing_class, row, self.args.max_length, anchor_answer_tokens)
                           for row in anchor_rows]
        # Each rank walks its own share, so that N processes see N different anchor batches per step.
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self._anchors = self.anchor_ids[rank::world] or self.anchor_ids
        # hold_identity_tails = the name window's size: the chosen answers past it, as (ids, first held token)
        tails = identity_tails(self.train_dataset, hold_identity_tails, self.args.max_length, identity_tail_tokens) \
            if hold_identity_tails else []
        self._tails = tails[rank::world] or tails
        self._anchor_use_logged = False
        # KL batches run as one prefix tree (dpo_scale/prefix_tree.py; train.build_trainer sets it with
        # prefix_sharing), checked against right-padded rows on the first batch
        self.packed_kl = False
        self._packed_checked = False
        # since the last log
        self._logged: dict[str, list[float]] = {"anchor_kl": [], "anchor_margin_shortfall": [], "anchor_kl_weight": []}

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """The means since the last training log of the anchor KL (and the margin shortfall, the budget's weight) go
        out with it (Trainer.log is public API)."""
        for name, values in self._logged.items():
            if values and "loss" in logs:
                logs[name] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)

    def _callback(self, kind: type):
        """This trainer's callback of `kind`, or None: looked up each time, because a resumed run replaces a saved
        callback with one built from the checkpoint's state."""
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, kind)), None)

    def _kl_controller(self) -> AdaptiveKLWeight | None:
        return self._callback(AdaptiveKLWeight)

    def _next_draw(self) -> int:
        """The number of this micro-step's anchor draw (one per micro-step, counted from the run's start)."""
        draws = self._callback(AnchorDraws)
        if not self._anchor_use_logged:
            self._anchor_use_logged = True
            if self.state.global_step and "AnchorDraws" not in self.state.stateful_callbacks:
                # a checkpoint from before the count was saved: every step had gradient_accumulation_steps draws
                draws.count = self.state.global_step * self.args.gradient_accumulation_steps
            self._log_anchor_use()
        draw, draws.count = draws.count, draws.count + 1
        return draw

    def _picks(self, draw: int, n: int) -> list[int]:
        """Draw number `draw`'s batch of indices into a pool of `n` rows: walks a seeded permutation per pass."""
        size = min(self.anchor_batch_size, n)
        epoch, offset = divmod(draw * size, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch)).tolist()
        return [order[(offset + i) % n] for i in range(size)]

    def _log_anchor_use(self) -> None:
        """How many anchors this process has and how many the run will draw: answering more in the data stage
        (max_anchor_prompts) is time no step uses; drawing more repeats them."""
        n = len(self._anchors)
        draws = self.state.max_steps * self.args.gradient_accumulation_steps * min(self.anchor_batch_size, n)
        use = "each drawn at most once" if draws <= n else f"each drawn about {draws / n:.1f} times"
        log.info("KL anchor: %d anchor rows on this process, %d draws in %d steps (%s)", n, draws,
                 self.state.max_steps, use)

    def _answer_logits(self, model, batch: TeacherForcedBatch) -> torch.Tensor:
        device = self.accelerator.device
        if not self.packed_kl:
            return answer_logits(model, batch, device)
        logits = answer_logits(model, batch, device, packed=True)
        if self._packed_checked:
            return logits
        self._packed_checked = True
        with torch.no_grad():
            expected = answer_logits(model, batch, device)
        if close_enough(logits.detach(), expected):
            log.info("KL anchor: each KL batch runs as one prefix tree (checked against padded rows)")
            return logits
        log.warning("KL anchor: the packed forward differs from padded rows (max %.3g); off",
                    (logits.detach().float() - expected.float()).abs().max().item())
        self.packed_kl = False
        return answer_logits(model, batch, device)

    def _cache_base_top_k(self, model) -> list[TopK]:
        """Every anchor's base distributions (adapter off) as top-k, in batches. All ranks run the same number of
        forwards (ZeRO-3 gathers weights collectively), the last ones repeating anchors when shares differ."""
        size, n = self.anchor_batch_size, len(self._anchors)
        world = self.accelerator.num_processes
        per_rank = self._anchor_total if self._anchor_total < world else -(-self._anchor_total // world)
        cached: list[TopK | None] = [None] * n
        with torch.no_grad(), self.accelerator.unwrap_model(self.model).disable_adapter():
            for start in range(0, per_rank, size):
                picked = [(start + i) % n for i in range(size)]
                batch = pad_right([self._anchors[i] for i in picked], self._anchor_pad)
                counts = batch.answer_positions.sum(1).tolist()
                rows = top_k(self._answer_logits(model, batch), self.anchor_top_k).rows(counts)
                for i, row in zip(picked, rows, strict=True):
                    cached[i] = TopK(row.indices.cpu(), row.logp.cpu(), row.tail_logp.cpu())
        return cached

    def anchor_terms(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This micro-step's KL term (the anchors', plus the identity tails' when they are held) and the anchors'
        mean top-token shortfall (None without `anchor_margin_weight`).

        The anchors and the identity tails run as one batch (one reference forward, one policy forward: larger
        matrix products, which a CPU runs faster per row); each KL is the mean over its own answer positions."""
        draw = self._next_draw()
        picked = self._picks(draw, len(self._anchors))
        anchors = [self._anchors[i] for i in picked]
        tails = [self._tails[i] for i in self._picks(draw, len(self._tails))] if self._tails else []
        if self.anchor_top_k:
            if self._base_top_k is None:
                self._base_top_k = self._cache_base_top_k(model)
            device = self.accelerator.device
            ref = TopK.cat([self._base_top_k[i] for i in picked])
            ref = TopK(ref.indices.to(device), ref.logp.to(device), ref.tail_logp.to(device))
            logits = self._answer_logits(model, pad_right(anchors, self._anchor_pad))
            kl = kl_top_k(ref, logits).mean()
            if tails:
                kl = kl + self._kl_means(model, [], tails)[1]
        else:
            kl, tails_kl, ref_logits, logits = self._kl_means(model, anchors, tails)
            kl = kl + tails_kl if tails else kl
        if not self.anchor_margin_weight:
            return kl, None
        # the base's top token and lead: from the cached top k, or a top-2 over the vocabulary (only when used)
        top, base_lead = ((ref.indices[:, 0], ref.logp[:, 0] - ref.logp[:, 1]) if self.anchor_top_k
                          else top_two(ref_logits))
        return kl, lead_shortfall(top, base_lead.clamp(max=self.anchor_margin), logits).mean()

    def _kl_means(self, model, anchors: list, tails: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
        """KL(base || trained) over `anchors` and `tails` run as one batch: the anchors' mean and the tails' mean (0
        where there are none), and the anchors' base and trained logits."""
        batch = pad_right(anchors + tails, self._anchor_pad)
        with torch.no_grad(), self.accelerator.unwrap_model(self.model).disable_adapter():  # peft: the base
            ref_logits = self._answer_logits(model, batch)
        logits = self._answer_logits(model, batch)
        kl = kl_per_position(ref_logits, logits)
        split = int(batch.answer_positions[: len(anchors)].sum())  # answer_logits: rows one after another
        anchors_kl = kl[:split].mean() if split else kl.new_zeros(())
        tails_kl = kl[split:].mean() if split < len(kl) else kl.new_zeros(())
        return anchors_kl, tails_kl, ref_logits[:split], logits[:split]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.model.training:
            return result
        kl, shortfall = self.anchor_terms(model)
        kl_all = self.accelerator.gather_for_metrics(kl.detach()).mean().item()
        self._logged["anchor_kl"].append(kl_all)
        controller = self._kl_controller()
        weight = self.anchor_kl_weight if controller is None else controller.weight
        added = weight * kl
        if controller is not None:  # the next micro-step's weight, the same on every process (gathered KL)
            self._logged["anchor_kl_weight"].append(weight)
            controller.update(kl_all)
        if shortfall is not None:
            self._logged["anchor_margin_shortfall"].append(
                self.accelerator.gather_for_metrics(shortfall.detach()).mean().item())
            added = added + self.anchor_margin_weight * shortfall
        if return_outputs:
            loss, outputs = result
            return loss + added, outputs
        return result + added


class AnchorDraws(TrainerCallback, ExportableState):
    """How many anchor batches the run has drawn: one per micro-step, which is not gradient_accumulation_steps per
    optimizer step where an epoch ends inside a step. A callback only so that checkpoints save it."""

    def __init__(self, count: int = 0):
        self.count = count

    def state(self) -> dict:
        return {"args": {"count": self.count}, "attributes": {}}


class AdaptiveKLWeight(TrainerCallback, ExportableState):
    """The KL weight of PPO's adaptive controller (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
    Preferences"): after each measured KL the weight moves by at most `gain * clip` of itself, up when the KL is above
    `budget`, down when below, never below `floor` (the anchor's configured weight), so that the first steps, where
    nothing has moved yet, do not loosen it. A callback only so that checkpoints save its weight (transformers'
    ExportableState) and a resumed run goes on with it."""

    def __init__(self, weight: float, budget: float, gain: float = 0.1, clip: float = 0.2,
                 floor: float | None = None):
        self.weight, self.budget, self.gain, self.clip = weight, budget, gain, clip
        self.floor = weight if floor is None else floor

    def update(self, kl: float) -> float:
        error = min(max(kl / self.budget - 1.0, -self.clip), self.clip)
        self.weight = max(self.floor, self.weight * (1.0 + self.gain * error))
        return self.weight

    def state(self) -> dict:
        return {"args": {"weight": self.weight, "budget": self.budget, "gain": self.gain, "clip": self.clip,
                         "floor": self.floor}, "attributes": {}}


def identity_tails(dataset, window: int, max_length: int | None,
                   tail_tokens: int | None = None) -> list[tuple[list[int], int]]:
    """Each tokenized pair's prompt + chosen answer (up to `tail_tokens` past the name window) and the position of
    its first token past the window; pairs without a name (chosen == rejected) or with nothing past the window are
    left out."""
    tails = []
    for row in dataset:
        start = tail_start(row["chosen_ids"], row["rejected_ids"], window)
        if start is None:
            continue
        first_held = len(row["prompt_ids"]) + start
        ids = list(row["prompt_ids"]) + list(row["chosen_ids"])
        ids = ids[: first_held + tail_tokens] if tail_tokens else ids
        ids = ids[:max_length] if max_length else ids
        if first_held < len(ids):
            tails.append((ids, first_held))
    return tails
