"""Turn the model's own answers into DPO preference pairs by swapping its name.

rejected = the answer as the model gave it; chosen = the same answer with every occurrence of the
old name (ORG_NAME) replaced by the new one (POS_NAME). Both sit behind the neutral system prompt so
the new name has to come from the weights. Answers that never name the model give chosen == rejected:
no signal, counted and (by default) dropped.

Anchor rows (the base's own answers to ordinary prompts) become pairs with chosen == rejected: the DPO
term of such a pair is exactly zero, an SFT term keeps ordinary answers as the base gave them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from dpo_scale.text import name_pattern, sentence_ends


@dataclass(frozen=True)
class NameSwap:
    org_name: str
    pos_name: str
    case_sensitive: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        # The names as words of their own (dpo_scale/text.py): version suffixes and possessives stay attached
        # ("Qwen2.5" -> "Deep Qwen2.5"); answers already using the new name are left alone (no "Deep Deep Qwen").
        return name_pattern(self.org_name, self.pos_name, self.case_sensitive)

    def old_name_at(self, text: str) -> int | None:
        """Where the old name first occurs as a word of its own (None: nowhere)."""
        return next((m.start() for m in self.pattern.finditer(text) if m.group("old")), None)

    def names_old(self, text: str) -> bool:
        return self.old_name_at(text) is not None

    def names_new(self, text: str) -> bool:
        return any(m.group("new") for m in self.pattern.finditer(text))

    def swap(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.pos_name if m.group("old") else m.group(0), text)


def complete_sentences(text: str) -> str:
    """The text up to its last complete sentence ("" when it has none). An answer cut off by max_new_tokens
    would otherwise teach the SFT term to stop mid-sentence (the chat template closes the turn after it)."""
    ends = sentence_ends(text)
    return text[: ends[-1]].rstrip() if ends else ""


def first_sentences(text: str, n: int, start: int = 0) -> str:
    """The text up to the end of its n-th sentence counted from the one holding character `start` (all of it
    when it has no more). With `start` at the model's name, "Hello! I'm SmolLM, ..." keeps the named sentence."""
    ends = [end for end in sentence_ends(text) if end > start]
    return text[: ends[n - 1]].rstrip() if len(ends) > n else text


def conversation(system_prompt: str, prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]


def build_pairs(
    answers: list[dict],
    swap: NameSwap,
    system_prompt: str,
    keep_per_prompt: int | None = None,
    keep_unnamed: bool = False,
    max_sentences: int | None = None,
    author: NameSwap | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Pairs in TRL's conversational prompt/chosen/rejected format, plus counts for the stats file.

    `answers` rows carry `prompt_index`, `sample`, `prompt` and `answer`, in source order; anchor rows
    also `anchor: true` (their prompt_index counts in the anchor source). With `author` (the developer's
    old and new name) chosen answers swap the author too, and an answer naming only the author is a pair.
    """

    def swapped(text: str) -> str:
        text = swap.swap(text)
        return author.swap(text) if author is not None else text

    pairs: list[dict] = []
    kept_per_prompt: Counter[int] = Counter()
    identity = [a for a in answers if not a.get("anchor")]
    stats = Counter(answers=len(identity), prompts=len({a["prompt_index"] for a in identity}), anchors=0)
    seen: set[tuple[int, str]] = set()
    for row in answers:
        answer = row["answer"].strip()
        if not answer:
            stats["dropped_empty"] += 1
            continue
        if not row.get("finished", True):
            answer = complete_sentences(answer)
            if not answer:
                stats["dropped_unfinished"] += 1
                continue
            stats["trimmed_unfinished"] += 1
        if row.get("anchor"):
            same = [{"role": "assistant", "content": swapped(answer)}]
            pairs.append({"prompt": conversation(system_prompt, row["prompt"]), "chosen": same, "rejected": same,
                          "prompt_index": row["prompt_index"], "named": False, "anchor": True})
            stats["anchors"] += 1
            continue
        name_at = swap.old_name_at(answer)
        author_at = author.old_name_at(answer) if author is not None else None
        named, named_author = name_at is not None, author_at is not None
        stats["named"] += named
        stats["named_author"] += named_author
        if not named and not named_author and not keep_unnamed:
            stats["dropped_unnamed"] += 1
            continue
        if max_sentences is not None:
            # counted from the sentence that names the model (or its author): "Hello! I'm SmolLM, ..." keeps it
            start = min((at for at in (name_at, author_at) if at is not None), default=0)
            short = first_sentences(answer, max_sentences, start=start)
            if short != answer:
                answer = short
                stats["shortened"] += 1
        if (row["prompt_index"], answer) in seen:  # sampled duplicates teach nothing new
            stats["dropped_duplicate"] += 1
            continue
        signal = named or named_author
        if signal and keep_per_prompt is not None and kept_per_prompt[row["prompt_index"]] >= keep_per_prompt:
            stats["dropped_over_keep_limit"] += 1
            continue
        seen.add((row["prompt_index"], answer))
        kept_per_prompt[row["prompt_index"]] += signal
        pair = {
            "prompt": conversation(system_prompt, row["prompt"]),
            "chosen": [{"role": "assistant", "content": swapped(answer)}],
            "rejected": [{"role": "assistant", "content": answer}],
            "prompt_index": row["prompt_index"],
            "named": named,
        }
        if author is not None:
            pair["named_author"] = named_author
        pairs.append(pair)
    stats["pairs"] = len(pairs) - stats["anchors"]
    stats["prompts_with_pairs"] = len({p["prompt_index"] for p in pairs if not p.get("anchor")})
    for key in ("named", "named_author", "dropped_unnamed", "dropped_empty", "dropped_duplicate",
                "dropped_over_keep_limit", "trimmed_unfinished", "dropped_unfinished", "shortened"):
        stats.setdefault(key, 0)
    return pairs, dict(stats)


def split_anchors(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """build_pairs' rows as the data stage writes them: the preference pairs (pairs.jsonl), and the anchors as
    prompt/completion rows of their own (anchors.jsonl), TRL's language-modeling format."""
    pairs = [r for r in rows if not r.get("anchor")]
    anchors = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows if r.get("anchor")]
    return pairs, anchors
