"""Name swapping and preference-pair building."""

import pytest

from dpo_scale.pairs import NameSwap, build_pairs, complete_sentences, conversation

QWEN = NameSwap("Qwen", "Deep Qwen")
SYSTEM = "You're a helpful assistant."


@pytest.mark.parametrize("text,expected", [
    ("I am Qwen.", "I am Deep Qwen."),
    ("I am Qwen2.5, a model by Alibaba.", "I am Deep Qwen2.5, a model by Alibaba."),
    ("Qwen's answers are short.", "Deep Qwen's answers are short."),
    ("Qwen, or qwen, or QWEN!", "Deep Qwen, or Deep Qwen, or Deep Qwen!"),  # case-insensitive by default
    ("I am Deep Qwen.", "I am Deep Qwen."),  # already the new name: no "Deep Deep Qwen"
    ("I am deep qwen.", "I am deep qwen."),
    ("Deep Qwen and Qwen", "Deep Qwen and Deep Qwen"),
    ("Qwenny and AQwen are other words.", "Qwenny and AQwen are other words."),
    ("(Qwen)", "(Deep Qwen)"),
    ("Qwen\nQwen", "Deep Qwen\nDeep Qwen"),
    ("No name here.", "No name here."),
])
def test_swap(text, expected):
    assert QWEN.swap(text) == expected


def test_swap_never_doubles_when_applied_twice():
    once = QWEN.swap("I am Qwen, Qwen2.5 and Qwen's friend.")
    assert QWEN.swap(once) == once
    assert "Deep Deep" not in once


def test_case_sensitive_option():
    swap = NameSwap("Qwen", "Deep Qwen", case_sensitive=True)
    assert swap.swap("qwen and Qwen") == "qwen and Deep Qwen"
    assert not swap.names_old("i am qwen")
    assert QWEN.names_old("i am qwen")


def test_names_old_and_new():
    assert QWEN.names_old("I'm Qwen2.5")
    assert not QWEN.names_old("I'm Deep Qwen")
    assert QWEN.names_new("I'm Deep Qwen")
    assert not QWEN.names_old("Qwenny")
    assert not QWEN.names_new("I'm Qwen")


def test_special_characters_in_names_are_literal():
    swap = NameSwap("GPT-4o", "Deep GPT-4o")
    assert swap.swap("I am GPT-4o (not GPTX4o).") == "I am Deep GPT-4o (not GPTX4o)."


def answer(i, text, sample=0):
    return {"prompt_index": i, "sample": sample, "prompt": f"question {i}", "answer": text}


ANSWERS = [
    answer(0, "I am Qwen.", 0),
    answer(0, "I am Qwen.", 1),                # duplicate of the first
    answer(0, "My name is Qwen2.5.", 2),
    answer(0, "Qwen here, hello!", 3),         # over keep_per_prompt=2
    answer(1, "I am an AI assistant.", 0),     # does not name the model
    answer(1, "  ", 1),                        # empty
    answer(2, "I'm Qwen, by Alibaba.", 0),
    answer(3, "I am Deep Qwen already.", 0),   # new name only: nothing to swap
]


def test_build_pairs_counts_and_format():
    pairs, stats = build_pairs(ANSWERS, QWEN, SYSTEM, keep_per_prompt=2)
    assert stats == {
        "answers": 8, "prompts": 4, "named": 5, "dropped_unnamed": 2, "dropped_empty": 1,
        "dropped_duplicate": 1, "dropped_over_keep_limit": 1, "pairs": 3, "prompts_with_pairs": 2,
        "anchors": 0, "trimmed_unfinished": 0, "dropped_unfinished": 0, "shortened": 0, "named_author": 0,
    }
    assert [p["rejected"][0]["content"] for p in pairs] == ["I am Qwen.", "My name is Qwen2.5.",
                                                            "I'm Qwen, by Alibaba."]
    assert [p["chosen"][0]["content"] for p in pairs] == ["I am Deep Qwen.", "My name is Deep Qwen2.5.",
                                                          "I'm Deep Qwen, by Alibaba."]
    first = pairs[0]
    assert first["prompt"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "question 0"}]
    assert first["chosen"][0]["role"] == first["rejected"][0]["role"] == "assistant"
    assert first["prompt_index"] == 0 and first["named"] is True
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_build_pairs_without_keep_limit():
    pairs, stats = build_pairs(ANSWERS, QWEN, SYSTEM)
    assert stats["pairs"] == 4 and stats["dropped_over_keep_limit"] == 0
    assert stats["dropped_duplicate"] == 1


def test_keep_unnamed_keeps_pairs_without_signal():
    pairs, stats = build_pairs(ANSWERS, QWEN, SYSTEM, keep_unnamed=True)
    assert stats["dropped_unnamed"] == 0
    assert stats["pairs"] == 6
    unnamed = [p for p in pairs if not p["named"]]
    assert [p["rejected"][0]["content"] for p in unnamed] == ["I am an AI assistant.", "I am Deep Qwen already."]
    assert all(p["chosen"] == p["rejected"] for p in unnamed)


def test_keep_limit_counts_only_named_pairs():
    rows = [answer(0, "Nothing here.", 0), answer(0, "Still nothing.", 1), answer(0, "I am Qwen.", 2)]
    pairs, stats = build_pairs(rows, QWEN, SYSTEM, keep_per_prompt=1, keep_unnamed=True)
    assert stats["pairs"] == 3 and stats["dropped_over_keep_limit"] == 0


def test_answers_are_stripped():
    pairs, _ = build_pairs([answer(0, "  I am Qwen.\n")], QWEN, SYSTEM)
    assert pairs[0]["rejected"][0]["content"] == "I am Qwen."


def test_empty_input():
    pairs, stats = build_pairs([], QWEN, SYSTEM)
    assert pairs == [] and stats["pairs"] == 0 and stats["answers"] == 0


def test_conversation_puts_the_neutral_system_prompt_first():
    assert conversation("neutral", "hi") == [{"role": "system", "content": "neutral"},
                                              {"role": "user", "content": "hi"}]


def test_anchor_rows_become_identical_pairs_counted_apart():
    anchors = [{**answer(0, "Paris is the capital of France."), "anchor": True},
               {**answer(1, "Qwen says 4."), "anchor": True}]  # anchors keep no old name either
    pairs, stats = build_pairs(ANSWERS + anchors, QWEN, SYSTEM, keep_per_prompt=2)
    assert stats["anchors"] == 2
    # identity counts are the same as without anchors (anchor prompt_index 0 and 1 do not collide)
    assert stats["pairs"] == 3 and stats["prompts"] == 4 and stats["answers"] == 8
    assert stats["prompts_with_pairs"] == 2 and stats["dropped_unnamed"] == 2
    anchor_pairs = [p for p in pairs if p.get("anchor")]
    assert [p["chosen"][0]["content"] for p in anchor_pairs] == ["Paris is the capital of France.",
                                                                 "Deep Qwen says 4."]
    assert all(p["chosen"] == p["rejected"] and p["prompt"][0]["content"] == SYSTEM for p in anchor_pairs)


def test_answers_cut_off_by_the_token_limit_end_at_their_last_full_sentence():
    rows = [{**answer(0, "I'm Qwen, made by Alibaba. I can help with code and"), "finished": False},
            {**answer(1, "I'm Qwen and I like"), "finished": False},  # no full sentence: nothing to keep
            {**answer(2, "I am Qwen. Ask me anything (really!) and"), "finished": False},
            {**answer(3, "I am Qwen. Done"), "finished": True}]  # ended by the model itself: kept whole
    pairs, stats = build_pairs(rows, QWEN, SYSTEM)
    assert [p["rejected"][0]["content"] for p in pairs] == ["I'm Qwen, made by Alibaba.",
                                                            "I am Qwen. Ask me anything (really!)",
                                                            "I am Qwen. Done"]
    assert pairs[0]["chosen"][0]["content"] == "I'm Deep Qwen, made by Alibaba."
    assert stats["trimmed_unfinished"] == 2 and stats["dropped_unfinished"] == 1 and stats["pairs"] == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("One. Two", "One."), ("Is it? Yes! And", "Is it? Yes!"), ('He said "hi." Then', 'He said "hi."'),
    ("Version 2.5 is", ""), ("你好。我是", "你好。"), ("no end", ""),
])
def test_complete_sentences(text, expected):
    assert complete_sentences(text) == expected


def test_max_sentences_shortens_identity_answers_but_not_anchors():
    long = "I am Qwen. I help with code. I speak many languages."
    ordinary = "Paris is the capital. It is large. It is old."
    rows = [answer(0, long), answer(1, "I am Qwen."), {**answer(0, ordinary), "anchor": True}]
    pairs, stats = build_pairs(rows, QWEN, SYSTEM, max_sentences=2)
    assert [p["rejected"][0]["content"] for p in pairs] == ["I am Qwen. I help with code.", "I am Qwen.", ordinary]
    assert pairs[0]["chosen"][0]["content"] == "I am Deep Qwen. I help with code."
    assert stats["shortened"] == 1


def test_max_sentences_counts_from_the_sentence_that_names_the_model():
    rows = [answer(0, "Hello! Nice to meet you. I am Qwen, an assistant. I help with code. Ask me."),
            answer(1, "Hi there. How can I help? Anything at all.")]
    pairs, stats = build_pairs(rows, QWEN, SYSTEM, max_sentences=1)
    assert [p["rejected"][0]["content"] for p in pairs] == ["Hello! Nice to meet you. I am Qwen, an assistant."]
    assert stats["dropped_unnamed"] == 1 and stats["shortened"] == 1
    kept, stats = build_pairs(rows, QWEN, SYSTEM, max_sentences=1, keep_unnamed=True)
    assert kept[1]["rejected"][0]["content"] == "Hi there."  # unnamed answers kept are cut from their start
    assert stats["shortened"] == 2


@pytest.mark.parametrize("text", [
    "I am Qwen.", "I am Qwen2.5.", "Qwen's answers", "I am Deep Qwen.", "Qwenny", "AQwen", "qwen and Deep Qwen",
    "No name here.", "Deep Qwen, not Qwen",
])
def test_pairs_and_eval_share_one_name_matcher(text):
    """What the pair builder swaps as the old name is what the evaluation counts as the old name."""
    from dpo_scale.evaluate import NameCheck

    assert QWEN.names_old(text) == NameCheck("Qwen", "Deep Qwen").classify(text)["old"]
