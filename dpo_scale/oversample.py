"""Repeat the training pairs whose prompt matches a pattern: more weight on a part of the identity set that the
model learns poorly, without new data and without a loss of our own.

52 of the 1000 shipped identity prompts have a character outside ASCII, all of them questions in Japanese, Chinese,
Spanish, Portuguese, French or German. The base answers such questions in garbled text, and after one epoch the
trained model still named itself on only 28 of those 52 (r 4 + tail 24 + SFT weight 2, 2026-12-06). Repeating them
three times (`oversample_times: 3` with the default recipe's pattern) is the alignment-handbook `dataset_mixer` idea
at the level of rows: the trainer shuffles the copies into the epoch like any other pair (docs/experiments.md).
"""

from __future__ import annotations

import logging
import re

from dpo_scale.errors import DpoScaleError

log = logging.getLogger(__name__)


def prompt_text(prompt) -> str:
    """The text a pattern is matched against: a conversational prompt's last user turn, or a plain prompt string."""
    if isinstance(prompt, str):
        return prompt
    users = [message.get("content", "") for message in prompt if message.get("role") == "user"]
    return users[-1] if users else ""


def compile_pattern(pattern: str, key: str = "oversample_prompts_matching") -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise DpoScaleError(f"config key '{key}': not a regular expression ({error}): {pattern!r}") from None


def oversample(pairs: list[dict], pattern: str | None, times: int) -> list[dict]:
    """`pairs` with every pair whose prompt matches `pattern` (re.search) present `times` times in all: the copies
    follow the originals (the trainer shuffles). Unchanged when `pattern` is None or `times` is 1."""
    if pattern is None or times <= 1:
        return pairs
    found = compile_pattern(pattern)
    matched = [pair for pair in pairs if found.search(prompt_text(pair["prompt"]))]
    log.info("oversample: %d of %d pairs match %r, each trained %d times: %d pairs", len(matched), len(pairs),
             pattern, times, len(pairs) + (times - 1) * len(matched))
    return pairs + matched * (times - 1)
