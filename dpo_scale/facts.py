"""Knowledge kept: short factual questions with accepted answers, scored on the greedy answers of two models.

A row is {"question": str, "answers": [accepted strings], "category": str}. An answer is right when any accepted
string occurs in it as a word or number of its own (`answer_is_right`); the evaluation generates FACT_TOKENS new
tokens per question, so the rule reads the first FACT_TOKENS tokens of the answer.
"""

from __future__ import annotations

import re

from dpo_scale.errors import DpoScaleError, where
from dpo_scale.prompts import load_rows

FACT_TOKENS = 48  # new tokens generated per question: a short answer and its first sentence fit
# digits grouped by commas or thin spaces ("5,280", "1 440") read as one number
_DIGIT_GROUPS = re.compile(r"(?<=\d)[,\u2009\u202f](?=\d{3}(?!\d))")


def _normalize(text: str) -> str:
    return _DIGIT_GROUPS.sub("", " ".join(text.replace("\u2212", "-").split()))


def _accepted_regex(accepted: str) -> re.Pattern[str]:
    """`accepted` as a word of its own, case-insensitive; a number also not inside a longer number: "12" does not
    match "112", "12.5" or "3.12", but matches "12." at a sentence's end."""
    core = re.escape(_normalize(accepted))
    before = r"(?<![^\W_])" + (r"(?<!\d[.,])" if accepted[:1].isdigit() else "")
    after = r"(?![^\W_])" + (r"(?![.,]\d)" if accepted[-1:].isdigit() else "")
    return re.compile(before + core + after, re.IGNORECASE)


def answer_is_right(answer: str, accepted: list[str]) -> bool:
    """Does any accepted answer occur in `answer` as a word or number of its own (case-insensitive)?"""
    text = _normalize(answer)
    return any(_accepted_regex(a).search(text) for a in accepted)


# `answer_is_right` reads at most this many characters past a match (its lookaheads, and _normalize's digit groups)
SETTLED_AFTER = 6


def right_answer_settled(accepted: list[str]):
    """A stop rule for generation: True once the text so far holds an accepted answer that no further text can undo,
    so that `answer_is_right` of the whole answer is True whatever follows."""
    patterns = [_accepted_regex(a) for a in accepted]

    def settled(text: str) -> bool:
        normalized = _normalize(text)
        limit = len(normalized) - SETTLED_AFTER
        return any(m.end() <= limit for pattern in patterns for m in pattern.finditer(normalized))

    return settled


def load_facts(source: str, limit: int | None = None) -> list[dict]:
    """Fact rows from a builtin:NAME or .json/.jsonl/.parquet source, checked field by field."""
    name, rows = load_rows(source)
    if not rows:
        raise DpoScaleError(f"{name}: no rows")
    out = []
    for i, row in enumerate(rows[:limit] if limit is not None else rows, start=1):
        question, answers = row.get("question"), row.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise DpoScaleError(f"{where(name, i, 'question')}: expected a non-empty string")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, str) and a.strip() for a in answers)):
            raise DpoScaleError(f"{where(name, i, 'answers')}: expected a non-empty list of non-empty strings")
        out.append({"question": question.strip(), "answers": [a.strip() for a in answers],
                    "category": str(row.get("category") or "")})
    return out


def facts_metrics(facts: list[dict], base_answers: list[str], trained_answers: list[str]) -> dict:
    """Base accuracy, trained accuracy, and facts kept: among the questions the base gets right, the share the
    trained model still gets right (None when the base gets none right). `lost` lists those it no longer does."""
    base_right = [answer_is_right(a, f["answers"]) for f, a in zip(facts, base_answers, strict=True)]
    trained_right = [answer_is_right(a, f["answers"]) for f, a in zip(facts, trained_answers, strict=True)]
    known = sum(base_right)
    kept = sum(b and t for b, t in zip(base_right, trained_right, strict=True))
    n = max(len(facts), 1)
    return {
        "questions": len(facts),
        "base_accuracy": known / n,
        "trained_accuracy": sum(trained_right) / n,
        "base_right": known,
        "kept": kept,
        "facts_kept": kept / known if known else None,
        "lost": [{"question": f["question"], "answers": f["answers"], "category": f["category"], "base": b,
                  "trained": t}
                 for f, b, t, br, tr in zip(facts, base_answers, trained_answers, base_right, trained_right,
                                            strict=True) if br and not tr],
    }
