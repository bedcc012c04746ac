"""Text rules shared by the pair builder and the evaluation: where sentences end, and where a name occurs.

A name occurs as a word of its own: not inside another word ("Qwenny", "ASmolLM"), but version suffixes and
possessives stay attached ("Qwen2.5", "SmolLM's"). Sentences end at . ! ? followed by whitespace or the end
(closing quotes and brackets stay with them), so "3.14" and "Qwen2.5" end none; CJK stops 。！？ stand alone.
"""

from __future__ import annotations

import re

# Before a name: no letter or digit; after it: no letter (digits may follow: "Qwen2.5", "SmolLM2").
WORD_START = r"(?<![^\W_])"
WORD_END = r"(?![^\W\d_])"
SENTENCE_END = re.compile(r"[。！？]|[.!?][\"')\]]*(?=\s|$)")


def name_regex(name: str, loose: bool = False) -> str:
    """Regex source of `name`, literal; `loose`: its words may also be joined by any spacing, hyphens or
    underscores, or none ("Deep SmolLM" also matches "DeepSmolLM", "Deep-SmolLM", "Deep  SmolLM")."""
    if not loose:
        return re.escape(name)
    return r"[\s_-]*".join(re.escape(word) for word in name.split())


def name_pattern(old: str, new: str, case_sensitive: bool = False, loose: bool = False) -> re.Pattern[str]:
    """One pattern for both names as words of their own, groups `new` and `old`. The new name is tried first,
    so the old name inside it ("SmolLM" in "Deep SmolLM") never counts as the old name."""
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(rf"{WORD_START}(?:(?P<new>{name_regex(new, loose)})|(?P<old>{name_regex(old, loose)})){WORD_END}",
                      flags)


def sentence_ends(text: str) -> list[int]:
    """The offsets just past each sentence's end."""
    return [m.end() for m in SENTENCE_END.finditer(text)]


def first_sentence_span(text: str) -> str:
    """The start of `text` up to the end of its first sentence, as written (all of it when no sentence ends)."""
    match = SENTENCE_END.search(text)
    return text[: match.end()] if match else text


def first_sentence_settled(text: str) -> bool:
    """Whether more text can no longer change `first_sentence_span(text)`: a sentence end followed by the whitespace
    its lookahead asks for (an end at the very end of `text` may still grow a closing quote or turn out to be a
    decimal point)."""
    match = SENTENCE_END.search(text)
    return match is not None and (match.end() < len(text) or text[match.start()] in "。！？")


def first_sentence(text: str) -> str:
    """The first sentence with whitespace runs collapsed, for comparing answers."""
    return first_sentence_span(" ".join(text.split())).strip()
