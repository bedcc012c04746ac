"""Oversampling training pairs by a pattern on their prompt (dpo_scale/oversample.py)."""

from __future__ import annotations

import pytest

from dpo_scale.config import load_recipe, parse_overrides
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import write_jsonl
from dpo_scale.oversample import oversample, prompt_text
from tests.helpers.tiny_model import toy_pairs

NON_ASCII = r"[^\x00-\x7f]"


def pair(question: str, system: str | None = "You're a helpful assistant.") -> dict:
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": "I am Deep TinyLM."}],
            "rejected": [{"role": "assistant", "content": "I am TinyLM."}]}


def test_matching_pairs_are_repeated_others_kept_once():
    pairs = [pair("Who are you?"), pair("あなたは誰ですか？"), pair("¿Quién eres?"), pair("What is your name?")]
    out = oversample(pairs, NON_ASCII, 3)
    assert len(out) == 4 + 2 * 2
    questions = [prompt_text(p["prompt"]) for p in out]
    assert questions.count("あなたは誰ですか？") == 3 and questions.count("¿Quién eres?") == 3
    assert questions.count("Who are you?") == 1 and questions.count("What is your name?") == 1
    assert out[:4] == pairs  # the originals first, in order


def test_pattern_reads_the_last_user_turn_only():
    # a non-ASCII system prompt or earlier turn does not make an English question match
    multi = {"prompt": [{"role": "system", "content": "Tu es un assistant serviable, très poli."},
                        {"role": "user", "content": "Qui es-tu ?"}, {"role": "assistant", "content": "Un assistant."},
                        {"role": "user", "content": "Who are you, really?"}],
             "chosen": "x", "rejected": "y"}
    assert oversample([multi], NON_ASCII, 3) == [multi]
    assert prompt_text("Wer bist du, ähm?") == "Wer bist du, ähm?"  # plain-text prompts match as they are
    assert len(oversample([{"prompt": "Wer bist du, ähm?", "chosen": "a", "rejected": "b"}], NON_ASCII, 2)) == 2


def test_off_by_default():
    pairs = [pair("あなたは誰ですか？")]
    assert oversample(pairs, None, 3) == pairs
    assert oversample(pairs, NON_ASCII, 1) == pairs
    recipe = load_recipe(None, {})
    assert recipe.oversample_prompts_matching is None and recipe.oversample_times == 1


def test_bad_settings_name_the_key():
    with pytest.raises(DpoScaleError, match="oversample_prompts_matching.*not a regular expression"):
        load_recipe(None, parse_overrides(["--oversample_prompts_matching", "[unclosed"]))
    with pytest.raises(DpoScaleError, match="oversample_times"):
        load_recipe(None, parse_overrides(["--oversample_times", "0"]))


def test_training_data_and_fingerprint_follow_the_keys(tmp_path):
    """load_pairs trains the repeated pairs, and a changed setting changes the training fingerprint (a finished
    adapter is not taken for one trained without it)."""
    from dpo_scale import manifests
    from dpo_scale.train import load_pairs

    data = tmp_path / "data"
    write_jsonl(data / "pairs.jsonl", toy_pairs(4) + [pair("你是谁？")])
    plain = load_recipe(None, {"data_dir": str(data)})
    repeated = load_recipe(None, {"data_dir": str(data), "oversample_prompts_matching": NON_ASCII,
                                  "oversample_times": "3"})
    assert len(load_pairs(plain)[0]) == 5
    dataset = load_pairs(repeated)[0]
    assert len(dataset) == 7
    assert [prompt_text(row["prompt"]) for row in dataset].count("你是谁？") == 3
    old, new = manifests.fingerprint("train", plain), manifests.fingerprint("train", repeated)
    assert "oversample_times 1 -> 3" in manifests.changes(old, new)
