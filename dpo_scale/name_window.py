"""Train identity answers only around the name: the rest of each answer stays out of the loss.

A pair's chosen and rejected answers are the same text except where the name is. Trained whole, the SFT term
also teaches every other token of the answer (logps of the chosen answers went from -116 to -23 nats in the
default run) and, through the end-of-turn token, where answers stop: changes the model's ordinary answers feel
too. With `name_window_tokens: N` each tokenized answer is cut N tokens after the first token where chosen and
rejected differ (the first name): the loss sees the answer's opening, the name and a few words after it, and
no end-of-turn. Pairs whose answers are identical (no name in them) stay whole. The cut happens in the data
collator, a public DPOTrainer argument.
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


def tail_start(chosen: list[int], rejected: list[int], tokens: int) -> int | None:
    """Index of the chosen answer's first token past the name window (None when the pair names no one)."""
    first = first_difference(chosen, rejected)
    return None if first is None else first + tokens


class NameWindowCollator:
    """TRL's preference collator over pairs cut to the name window (a public `data_collator`, so the reference
    log-probs TRL precomputes through the same collator see the cut answers too)."""

    def __init__(self, inner, tokens: int):
        self.inner, self.tokens = inner, tokens

    def __call__(self, examples: list[dict]) -> dict:
        return self.inner([{**example, **clip_to_name_window(example, self.tokens)} for example in examples])


def name_window_collator(tokenizer, model, args, tokens: int) -> NameWindowCollator:
    """The collator DPOTrainer would build for `args` (TRL 1.x `DataCollatorForPreference`), cutting answers to
    the name window. Passing a collator skips DPOTrainer's own pad-token setup, so it is done here the same way:
    the tokenizer's pad token, mirrored onto the model's configs."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    inner = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                      truncation_mode=args.truncation_mode,
                                      pad_to_multiple_of=args.pad_to_multiple_of)
    return NameWindowCollator(inner, tokens)
