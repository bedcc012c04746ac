"""Prompt loading: last human turn of ShareGPT / OpenAI rows from every supported source, clear errors."""

import itertools
import json

import pytest

from dpo_scale.errors import DpoScaleError
from dpo_scale.prompts import last_human_turn, load_prompts

SHAREGPT = [
    {"conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": "4."},
                       {"from": "human", "value": "  And who are you?  "}]},
    # the last turn is the assistant's: the prompt is the human turn before it
    {"conversations": [{"from": "system", "value": "Be nice."}, {"from": "human", "value": "Your name?"},
                       {"from": "gpt", "value": "I am X."}]},
    {"conversations": [{"from": "user", "value": "Who made you?"}]},
]
OPENAI = [
    {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": "What model are you?"}]},
]
EXPECTED = ["And who are you?", "Your name?", "Who made you?", "What model are you?"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def texts(prompts):
    return [p.text for p in prompts]


def test_last_human_turn_sharegpt_and_openai():
    assert [last_human_turn(r, "x", i) for i, r in enumerate(SHAREGPT + OPENAI, 1)] == EXPECTED


def test_jsonl_file(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", SHAREGPT + OPENAI)
    prompts = load_prompts(path)
    assert texts(prompts) == EXPECTED
    assert [p.index for p in prompts] == [0, 1, 2, 3]
    assert texts(load_prompts(path, limit=2)) == EXPECTED[:2]


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(SHAREGPT[0]) + "\n\n" + json.dumps(OPENAI[0]) + "\n", encoding="utf-8")
    assert texts(load_prompts(str(path))) == [EXPECTED[0], EXPECTED[3]]


def test_json_list_and_split_dict(tmp_path):
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps(SHAREGPT + OPENAI), encoding="utf-8")
    assert texts(load_prompts(str(plain))) == EXPECTED
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": SHAREGPT, "test": OPENAI}), encoding="utf-8")
    assert texts(load_prompts(str(split), split="test")) == EXPECTED[3:]
    assert texts(load_prompts(str(split))) == EXPECTED[:3]


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(SHAREGPT), path)
    assert texts(load_prompts(str(path))) == EXPECTED[:3]


def test_datasets_save_to_disk_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(OPENAI * 2).save_to_disk(str(tmp_path / "single"))
    assert texts(load_prompts(str(tmp_path / "single"))) == EXPECTED[3:] * 2
    DatasetDict({"train": Dataset.from_list(SHAREGPT), "eval": Dataset.from_list(OPENAI)}).save_to_disk(
        str(tmp_path / "dict"))
    assert texts(load_prompts(str(tmp_path / "dict"))) == EXPECTED[:3]
    assert texts(load_prompts(str(tmp_path / "dict"), split="eval")) == EXPECTED[3:]
    with pytest.raises(DpoScaleError, match="no split 'nope'"):
        load_prompts(str(tmp_path / "dict"), split="nope")


def test_builtin_identity_sets():
    train = load_prompts("builtin:identity")
    heldout = load_prompts("builtin:identity_heldout")
    assert len(train) == 1000
    assert len(heldout) == 100
    assert all(p.text for p in train + heldout)
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    assert not {norm(p.text) for p in train} & {norm(p.text) for p in heldout}
    assert len(load_prompts("builtin:ordinary_prompts")) > 0


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DpoScaleError, match=r"builtin:nope.*identity_heldout"):
        load_prompts("builtin:nope")


def test_malformed_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SHAREGPT[0]) + "\n" + '{"conversations": [\n', encoding="utf-8")
    with pytest.raises(DpoScaleError, match=r"bad\.jsonl, row 2: malformed JSON"):
        load_prompts(str(path))


def test_non_object_line(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [[1, 2]])
    with pytest.raises(DpoScaleError, match=r"list\.jsonl, row 1: expected a JSON object"):
        load_prompts(path)


def test_row_without_conversations(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [SHAREGPT[0], {"text": "hello"}])
    with pytest.raises(DpoScaleError, match=r"p\.jsonl, row 2, field 'conversations': missing"):
        load_prompts(path)


def test_row_without_human_turn(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [SHAREGPT[0], SHAREGPT[1],
                                              {"conversations": [{"from": "gpt", "value": "hi"}]}])
    with pytest.raises(DpoScaleError, match=r"p\.jsonl, row 3, field 'conversations': no human turn"):
        load_prompts(path)


@pytest.mark.parametrize("row", [
    {"conversations": [{"from": "human", "value": "   "}]},
    {"conversations": [{"from": "human", "value": None}]},
    {"messages": [{"role": "user", "content": ""}]},
])
def test_empty_prompt(tmp_path, row):
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    field = "conversations" if "conversations" in row else "messages"
    with pytest.raises(DpoScaleError, match=rf"p\.jsonl, row 1, field '{field}': .*empty prompt"):
        load_prompts(path)


def test_turns_not_a_list(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"conversations": "hello"}])
    with pytest.raises(DpoScaleError, match=r"row 1, field 'conversations': expected a list"):
        load_prompts(path)


def test_other_source_errors(tmp_path):
    with pytest.raises(DpoScaleError, match="no rows"):
        load_prompts(write_jsonl(tmp_path / "empty.jsonl", []))
    (tmp_path / "p.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DpoScaleError, match="unsupported file type '.csv'"):
        load_prompts(str(tmp_path / "p.csv"))
    with pytest.raises(DpoScaleError, match="not found"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(DpoScaleError, match=r"bad\.json: malformed JSON"):
        load_prompts(str(bad))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DpoScaleError, match="not a `datasets` folder"):
        load_prompts(str(tmp_path / "empty_dir"))


def test_missing_relative_file_is_not_taken_for_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DpoScaleError, match=r"prompts/mine\.jsonl.*not found"):
        load_prompts("prompts/mine.jsonl")


def test_builtin_drift_prompts_are_not_anchors():
    """Drift is measured on ordinary prompts the KL anchor never saw (identity: see the test above)."""
    text = lambda name: {p.text.strip().lower() for p in load_prompts(f"builtin:{name}")}  # noqa: E731
    sets = {name: text(name) for name in ("anchor_prompts", "ordinary_prompts", "ordinary_prompts_recheck",
                                          "ordinary_prompts_holdout", "ordinary_prompts_report")}
    assert [len(s) for s in sets.values()] == [435, 40, 40, 60, 80]
    for first, second in itertools.combinations(sets, 2):
        assert not sets[first] & sets[second], (first, second)


def test_report_sets_are_disjoint_from_every_other_set():
    """The report sets (identity_report, ordinary_prompts_report, facts) share no prompt with any set that trains
    or tunes the recipe, nor with each other."""
    from dpo_scale.io import read_jsonl
    from dpo_scale.prompts import builtin_path

    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    names = ("identity", "identity_heldout", "identity_indirect_tune", "identity_report", "anchor_prompts",
             "ordinary_prompts", "ordinary_prompts_recheck", "ordinary_prompts_holdout", "ordinary_prompts_report")
    sets = {name: {norm(p.text) for p in load_prompts(f"builtin:{name}")} for name in names}
    for name in ("facts", "facts_tune"):
        sets[name] = {norm(row["question"]) for row in read_jsonl(builtin_path(name))}
    assert len(sets["identity_report"]) == 80 and len(sets["ordinary_prompts_report"]) == 80
    for report in ("identity_report", "ordinary_prompts_report", "facts"):
        for other in sets:
            if other != report:
                assert not sets[report] & sets[other], (report, other, sorted(sets[report] & sets[other])[:3])


def test_anchor_prompts_xl_is_out_of_sample():
    """The large anchor set (scripts/build_anchor_prompts.py --xl): the default anchors plus ~2000 more, none equal to
    a facts, identity or ordinary prompt, and none asking the capital of a country or a sum of the numbers the facts
    sets ask about."""
    import re

    from dpo_scale.io import read_jsonl
    from dpo_scale.prompts import builtin_path

    norm = lambda t: " ".join(re.findall(r"\w+", t.lower()))  # noqa: E731  (case, spacing, punctuation aside)
    xl = [p.text for p in load_prompts("builtin:anchor_prompts_xl")]
    assert len(xl) >= 2000
    assert len({norm(t) for t in xl}) == len(xl)
    assert {p.text for p in load_prompts("builtin:anchor_prompts")} <= set(xl)

    data = builtin_path("facts").parent
    facts = [row["question"] for name in ("facts", "facts_tune") for row in read_jsonl(builtin_path(name))]
    others = {"facts": facts}
    for path in sorted(data.glob("identity*.jsonl")) + sorted(data.glob("ordinary_prompts*.jsonl")):
        others[path.stem] = [p.text for p in load_prompts(str(path))]
    assert len(others) >= 1 + 3 + 4
    xl_norm = {norm(t) for t in xl}
    for name, texts in others.items():
        assert not xl_norm & {norm(t) for t in texts}, (name, sorted(xl_norm & {norm(t) for t in texts})[:3])

    capital = re.compile(r"capital(?: city)? of (?:the )?(?:(?:us|canadian|australian) )?(?:(?:state|province) of )?"
                         r"(?:the )?([^?.,!]+)", re.I)
    countries = lambda texts: {m.group(1).strip().lower() for t in texts for m in capital.finditer(t)}  # noqa: E731
    assert len(countries(facts)) >= 50
    assert not countries(xl) & countries(facts), sorted(countries(xl) & countries(facts))

    arithmetic = re.compile(r"\b(plus|minus|times|multipl\w*|divid\w*|sum|product|squared|square root|cubed|half|"
                            r"quarters?|thirds?|percent|add|subtract|left|more|each|total)\b|\d\s*[-+×÷*/%]\s*\d", re.I)
    operands = lambda texts: {tuple(sorted(re.findall(r"\d+", t), key=int))  # noqa: E731
                              for t in texts if arithmetic.search(t) and re.search(r"\d", t)}
    assert len(operands(facts)) >= 40
    assert not operands(xl) & operands(facts), sorted(operands(xl) & operands(facts))


def test_anchor_prompts_xl_first_rows_sample_the_whole_set():
    """`max_anchor_prompts: N` takes the xl set's first N rows: they must be a sample of the whole set (the default
    anchors and the new ones in about their overall shares), not the 435 default anchors it was built from."""
    xl = [p.text for p in load_prompts("builtin:anchor_prompts_xl")]
    default = {p.text for p in load_prompts("builtin:anchor_prompts")}
    overall = len(default) / len(xl)
    first = xl[:500]
    share = sum(text in default for text in first) / len(first)
    assert 0.5 * overall < share < 1.5 * overall, (share, overall)
