"""Train identity answers only around the name: the rest of each answer stays out of the loss.

A pair's chosen and rejected answers are the same text except where the name is. Trained whole, the SFT term
also teaches every other token of the answer (logps of the chosen answers went from -116 to -23 nats in the
default run) and, through the end-of-turn token, where answers stop: changes the model's ordinary answers feel
too. With `name_window_tokens: N` each tokenized answer is cut N tokens after the first token where chosen and
rejected differ (the first name): the loss sees the answer's opening, the name and a few words after it, and
no end-of-turn. Pairs whose answers are identical (no name in them) stay whole.
"""

from __future__ import annotations

from trl.data_utils import common_prefix_length  # what TRL itself uses to split prompt from completion


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where `a` and `b` differ (the shorter length if one prefixes the other);
    None when they are equal."""
    return None if a == b else common_prefix_length(a, b)


def clip_to_name_window(example: dict, tokens: int) -> dict:
    """Cut a tokenized pair (TRL's `chosen_ids`/`rejected_ids`) `tokens` tokens past its first difference."""
    chosen, rejected = example["chosen_ids"], example["rejected_ids"]
    first = first_difference(chosen, rejected)
    if first is None:
        return {"chosen_ids": chosen, "rejected_ids": rejected}
    return {"chosen_ids": chosen[: first + tokens], "rejected_ids": rejected[: first + tokens]}


def with_name_window(trainer_class: type, tokens: int) -> type:
    """`trainer_class` (a TRL DPOTrainer) whose tokenized datasets are cut to the name window. Done inside
    `_prepare_dataset`, so that precomputed reference log-probs see the cut answers too."""

    class NameWindowTrainer(trainer_class):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            return dataset.map(clip_to_name_window, fn_kwargs={"tokens": tokens})

    NameWindowTrainer.__name__ = f"NameWindow{trainer_class.__name__}"
    return NameWindowTrainer
