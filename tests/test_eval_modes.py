"""`evaluate` end to end on the tiny model: identity in both modes (the trained model's own template in the default
mode), the author's names, facts, and the drift set shrunk by max_ordinary_prompts."""

import json
import shutil

import pytest

from dpo_scale.config import Recipe


def write_prompts(path, texts):
    path.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": t}]}) + "\n" for t in texts),
                    encoding="utf-8")
    return str(path)


QUESTIONS = ["Who are you?", "What is your name?", "Introduce yourself."]
FACTS = [{"question": "Who are you?", "answers": ["TinyLM"], "category": "identity"},
         {"question": "What is 2 + 2?", "answers": ["4", "four"], "category": "arithmetic"}]


@pytest.fixture
def trained_with_own_template(tiny_model, tmp_path):
    """The tiny model's weights with a chat template of its own: without a system message it starts the answer
    with "I am Deep" (the tiny model answers alike under any system prompt; a pre-filled start it must continue)."""
    folder = tmp_path / "trained"
    shutil.copytree(tiny_model, folder)
    template = folder / "chat_template.jinja"
    text = template.read_text(encoding="utf-8")
    generation_prompt = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    assert generation_prompt in text
    prefilled = generation_prompt + "{% if messages[0]['role'] != 'system' %}{{ 'I am Deep' }}{% endif %}"
    template.write_text(text.replace(generation_prompt, prefilled), encoding="utf-8")
    return str(folder)


def test_evaluate_both_modes_author_facts_and_drift_size(tiny_model, trained_with_own_template, tmp_path):
    from transformers import AutoModelForCausalLM

    from dpo_scale.evaluate import answer_all, chat_ids, evaluate_cli
    from dpo_scale.facts import answer_is_right
    from dpo_scale.models import load_tokenizer

    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(f) + "\n" for f in FACTS), encoding="utf-8")
    recipe = Recipe(model=tiny_model, org_name="TinyLM", pos_name="Deep TinyLM", org_author="Test Lab",
                    pos_author="Acme Labs", output_dir=str(tmp_path / "run"),
                    eval_questions=write_prompts(tmp_path / "q.jsonl", QUESTIONS),
                    ordinary_prompts=write_prompts(tmp_path / "o.jsonl", ["Name a fruit.", "What is 3 + 4?",
                                                                        "Write a word about snow."]),
                    max_ordinary_prompts=2, facts_questions=str(facts), eval_max_new_tokens=12,
                    eval_batch_size=1).validate()
    result = evaluate_cli(recipe, trained_with_own_template, None, None)

    assert result["drift"]["prompts"] == 2 and len(result["ordinary_answers"]) == 2
    # same weights, same rendering behind the system prompt: nothing drifts, nothing is lost
    assert [a["base"] for a in result["identity_answers"]] == [a["trained"] for a in result["identity_answers"]]
    assert result["drift"]["first_sentence_kept"] == 1 and result["drift"]["kl_per_token"] == pytest.approx(0, abs=1e-6)
    # without a system message each model answers under its own template's default one
    assert result["own_template"] is True and result["identity_default"]["system_prompt"] is None
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    default = result["identity_answers_default"]
    assert [a["base"] for a in default] != [a["trained"] for a in default]
    for side, folder in (("base", tiny_model), ("trained", trained_with_own_template)):
        tokenizer = load_tokenizer(folder)
        expected = answer_all(model, tokenizer, chat_ids(tokenizer, None, QUESTIONS), 12, batch_size=1)
        assert [a[side] for a in default] == expected, side
    for key in ("identity", "identity_default"):
        for side in ("base", "trained"):
            metrics = result[key][side]
            assert metrics["questions"] == 3 and set(metrics["author"]) == set(metrics) - {"author"}
    assert result["identity"]["base"]["named_any"] > 0  # the tiny model calls itself TinyLM

    answers = result["fact_answers"]
    right = [answer_is_right(a["base"], f["answers"]) for a, f in zip(answers, FACTS, strict=True)]
    assert [a["question"] for a in answers] == [f["question"] for f in FACTS]
    assert result["facts"]["base_accuracy"] == sum(right) / 2 and result["facts"]["lost"] == []
    assert result["facts"]["facts_kept"] == (1.0 if any(right) else None)

    md = (tmp_path / "run" / "eval.md").read_text(encoding="utf-8")
    assert "own template, no system message: trained" in md and "Author (Test Lab -> Acme Labs)" in md
    assert "### Facts kept (2 short factual questions)" in md
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["facts"]["questions"] == 2
