"""Stage fingerprints (dpo_scale/manifests.py): what each stage's output depends on, and nothing else."""

import dataclasses
import json

import pytest

from dpo_scale import manifests
from dpo_scale.config import FIELDS, Recipe
from dpo_scale.errors import DpoScaleError


def recipe(tmp_path, **kw) -> Recipe:
    return Recipe(output_dir=str(tmp_path / "run"), model="some/hub-model", **kw)


def test_every_key_list_names_real_recipe_fields():
    for stage, keys in manifests.STAGE_KEYS.items():
        # training_args holds the DPOConfig fields a recipe passes through (not a key of its own)
        assert set(keys) - {"training_args"} <= set(FIELDS), (stage, set(keys) - set(FIELDS))
        assert len(keys) == len(set(keys)), stage
    assert set(manifests.GENERATION_KEYS) <= set(manifests.DATA_KEYS)
    assert "training_args" in manifests.TRAIN_KEYS  # --optim etc. change what training produces


@pytest.mark.parametrize(("key", "value", "stale"), [
    ("beta", 0.2, {"train"}),
    ("learning_rate", 1e-3, {"train"}),
    ("temperature", 0.7, {"generation", "data"}),
    ("pos_name", "Neo SmolLM", {"data", "train", "merge", "eval"}),
    ("keep_unnamed", True, {"data"}),
    ("max_eval_questions", 5, {"eval"}),
    ("dtype", "bfloat16", {"generation", "data", "train", "merge", "eval"}),
    ("batch_size", 3, set()),  # speed only
    ("eval_batch_size", 3, set()),
    ("logging_steps", 7, set()),
    ("overwrite", True, set()),
])
def test_a_key_makes_exactly_the_stages_that_read_it_stale(tmp_path, key, value, stale):
    old = recipe(tmp_path)
    new = dataclasses.replace(old, **{key: value})
    changed = {s for s in manifests.STAGE_KEYS
               if manifests.changes(manifests.fingerprint(s, old), manifests.fingerprint(s, new))}
    assert changed == stale
    for s in stale:
        assert any(c.startswith(f"{key} ") for c in manifests.changes(manifests.fingerprint(s, old),
                                                                      manifests.fingerprint(s, new)))


@pytest.mark.parametrize(("key", "value"), [("anchor_kl_budget", 0.003), ("anchor_kl_budget_gain", 0.3)])
def test_the_kl_budget_makes_the_adapter_stale(tmp_path, key, value):
    old = recipe(tmp_path, anchor_kl_weight=100.0, anchor_kl_budget=0.002)
    new = dataclasses.replace(old, **{key: value})
    changed = {s for s in manifests.STAGE_KEYS
               if manifests.changes(manifests.fingerprint(s, old), manifests.fingerprint(s, new))}
    assert changed == {"train"}


def test_changes_name_old_and_new_values(tmp_path):
    old = manifests.fingerprint("train", recipe(tmp_path))
    new = manifests.fingerprint("train", recipe(tmp_path, beta=0.2, learning_rate=5e-4))
    assert manifests.changes(old, new) == ["beta 0.1 -> 0.2", "learning_rate 0.0001 -> 0.0005"]
    assert manifests.changes(old, old) == []
    assert manifests.changes("0123abcd", new) == ["written by an older dpo_scale without a stage fingerprint"]
    # what a manifest stores round-trips through JSON and still compares equal
    assert manifests.changes(json.loads(json.dumps(new)), new) == []


def test_input_files_are_part_of_the_fingerprint(tmp_path):
    r = recipe(tmp_path)
    pairs = r.data_path / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    before = manifests.fingerprint("train", r)
    pairs.write_text('{"prompt": "a", "chosen": "B", "rejected": "c"}\n')
    assert manifests.changes(before, manifests.fingerprint("train", r)) == ["input pairs.jsonl changed"]

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Who are you?"}\n')
    r = recipe(tmp_path, dataset=str(prompts))
    before = manifests.fingerprint("data", r)
    prompts.write_text('{"prompt": "Who made you?"}\n')
    assert manifests.changes(before, manifests.fingerprint("data", r)) == ["input dataset changed"]


def test_a_local_model_is_identified_by_its_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    r = dataclasses.replace(recipe(tmp_path), model=str(model))
    before = manifests.fingerprint("merge", r)
    (model / "model.safetensors").write_bytes(b"x" * 11)
    assert manifests.changes(before, manifests.fingerprint("merge", r)) == ["base model files changed"]


def test_recorded_reads_the_value_the_stage_used(tmp_path):
    manifest = {"fingerprint": manifests.fingerprint("train", recipe(tmp_path, beta=0.3))}
    assert manifests.recorded(manifest, "beta") == 0.3
    assert manifests.recorded({"recipe": {"beta": 0.4}}, "beta") == 0.4  # manifests of older versions
    assert manifests.recorded(None, "beta", "?") == "?"


def test_pipeline_refuses_before_touching_anything(tmp_path):
    from dpo_scale.io import write_json
    from dpo_scale.pipeline import run_pipeline

    done = recipe(tmp_path)
    write_json(manifests.manifest_path("train", done), {"fingerprint": manifests.fingerprint("train", done)})
    with pytest.raises(DpoScaleError, match=r"\(train: beta 0.1 -> 0.5\); .*--overwrite true to redo 'train'"):
        run_pipeline(dataclasses.replace(done, beta=0.5))
    assert not (tmp_path / "run" / "recipe.json").exists()
