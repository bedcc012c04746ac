"""Knowledge kept: the scoring rule for a fact's answer, the fact files, and the metrics."""

import json

import pytest

from dpo_scale.errors import DpoScaleError
from dpo_scale.facts import answer_is_right, facts_metrics, load_facts


@pytest.mark.parametrize("answer,accepted,right", [
    ("The capital of France is Paris.", ["Paris"], True),
    ("PARIS, of course", ["Paris"], True),  # any case
    ("Parisian food is great.", ["Paris"], False),  # inside another word
    ("7 + 5 = 12.", ["12", "twelve"], True),  # a number before the sentence's full stop
    ("It is twelve.", ["12", "twelve"], True),
    ("7 + 5 = 112", ["12"], False),  # "12" is not inside a longer number
    ("About 12.5 or so", ["12"], False),
    ("It is 3.12", ["12"], False),
    ("1212", ["12"], False),
    ("There are 5,280 feet in a mile.", ["5280"], True),  # digit groups read as one number
    ("There are 5280 feet in a mile.", ["5,280"], True),
    ("Water freezes at 273.15 K.", ["273.15", "273"], True),
    ("Water freezes at 273.15 K.", ["273"], False),
    ("It is forty-two.", ["forty-two"], True),
    ("Its symbol is Na.", ["Na"], True),
    ("NaCl is salt.", ["Na"], False),
    ("It was built by the Egyptians.", ["Egyptians", "Egypt"], True),
    ("Rich in vitamin   C.", ["vitamin C"], True),  # whitespace runs collapsed
    ("", ["Paris"], False),
])
def test_answer_is_right(answer, accepted, right):
    assert answer_is_right(answer, accepted) is right


SETTLE_CASES = [
    ("7 + 5 = 12. So the sum is twelve.", ["12"]),
    ("About 12.5 or so, 12 is close.", ["12"]),
    ("It is 1212 and then 12 more", ["12"]),
    ("There are 5,280 feet in a mile, or 5 280.", ["5280"]),
    ("There are 5,280 feet, not 5 feet.", ["5"]),
    ("Water freezes at 273.15 K, not 273 K.", ["273"]),
    ("The capital is Parisian? No: Paris is.", ["Paris"]),
    ("Its symbol is NaCl, so Na is in it.", ["Na"]),
]


@pytest.mark.parametrize("text,accepted", SETTLE_CASES)
def test_a_settled_right_answer_is_right_whatever_follows(text, accepted):
    """The evaluation stops a fact's answer once `right_answer_settled` holds: every prefix that it calls settled
    must be one whose whole answer is right, and it must fire before the end where the whole answer is right."""
    from dpo_scale.facts import right_answer_settled

    settled = right_answer_settled(accepted)
    settled_at = [n for n in range(len(text) + 1) if settled(text[:n])]
    assert settled_at == list(range(settled_at[0], len(text) + 1)) if settled_at else True  # once settled, it stays
    for n in settled_at:
        assert answer_is_right(text[:n] + " and 1 more words.", accepted)
    if settled_at:
        assert answer_is_right(text, accepted)


def test_a_right_answer_settles_soon_after_it_is_written():
    from dpo_scale.facts import right_answer_settled

    text = "7 + 5 = 12. So the sum is twelve."
    first = next(n for n in range(len(text) + 1) if right_answer_settled(["12"])(text[:n]))
    assert text[:first] == "7 + 5 = 12. So t"  # six characters past the match (trailing spaces do not count)


def test_a_number_that_could_still_grow_is_not_settled():
    from dpo_scale.facts import right_answer_settled

    settled = right_answer_settled(["12"])
    assert not any(settled(text) for text in ("About 12", "About 12.", "About 12.5", "About 12,0", "About 12,000"))
    assert settled("About 12 apples")


def test_facts_metrics_kept_lost_and_none():
    facts = [{"question": f"q{i}", "answers": [a], "category": "c"} for i, a in enumerate(["Paris", "12", "Rome"])]
    m = facts_metrics(facts, ["Paris.", "It is 12.", "Milan."], ["Paris!", "It is 13.", "Rome."])
    assert m["base_accuracy"] == pytest.approx(2 / 3) and m["trained_accuracy"] == pytest.approx(2 / 3)
    assert (m["base_right"], m["kept"], m["facts_kept"]) == (2, 1, 0.5)
    assert m["lost"] == [{"question": "q1", "answers": ["12"], "category": "c", "base": "It is 12.",
                          "trained": "It is 13."}]
    assert facts_metrics(facts, ["no"] * 3, ["Paris"] * 3)["facts_kept"] is None  # the base knows none
    with pytest.raises(ValueError):
        facts_metrics(facts, ["Paris"], ["Paris"])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("row,field", [
    ({"answers": ["x"]}, "question"),
    ({"question": "  ", "answers": ["x"]}, "question"),
    ({"question": "q"}, "answers"),
    ({"question": "q", "answers": []}, "answers"),
    ({"question": "q", "answers": "Paris"}, "answers"),
    ({"question": "q", "answers": ["Paris", ""]}, "answers"),
])
def test_load_facts_names_file_row_and_field(tmp_path, row, field):
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "ok?", "answers": ["ok"]}, row])
    with pytest.raises(DpoScaleError, match=rf"f\.jsonl, row 2, field '{field}'"):
        load_facts(path)


def test_load_facts_limit_and_defaults(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": " a? ", "answers": [" x "]}, {"question": "b?",
                                                                                         "answers": ["y"]}])
    assert load_facts(path, limit=1) == [{"question": "a?", "answers": ["x"], "category": ""}]


FACT_SETS = ("facts", "facts_tune")
CATEGORIES = {"capitals", "arithmetic", "units", "science", "history", "language", "geography"}


def test_builtin_fact_sets_are_sized_disjoint_and_do_not_give_the_answer_away():
    sets = {name: load_facts(f"builtin:{name}") for name in FACT_SETS}
    assert len(sets["facts"]) >= 200 and 50 <= len(sets["facts_tune"]) <= 80
    for rows in sets.values():
        assert {r["category"] for r in rows} == CATEGORIES
        # a question that holds one of its own answers would be scored right by repeating it
        assert not [r["question"] for r in rows if answer_is_right(r["question"], r["answers"])]
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    report, tune = ({norm(r["question"]) for r in rows} for rows in sets.values())
    assert len(report) == len(sets["facts"]) and len(tune) == len(sets["facts_tune"])
    assert not report & tune
