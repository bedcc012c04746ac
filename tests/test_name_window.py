"""name_window_tokens (dpo_scale/name_window.py): identity answers cut a few tokens past the name before TRL's
DPO sees them, the end-of-turn left out; answers without a name left whole."""

import json

import pytest

from dpo_scale.name_window import clip_to_name_window, first_difference
from tests.helpers.tiny_model import toy_anchor_rows, toy_pairs, write_toy_pairs

pytestmark = pytest.mark.timeout(300)


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([7], [8]) == 0
    assert first_difference([1, 2], [1, 2, 3]) == 2  # one prefixes the other: they differ where it ends
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([], []) is None


def test_clip_keeps_the_opening_the_name_and_n_tokens():
    pair = {"chosen_ids": [10, 11, 20, 21, 12, 13, 14, 99], "rejected_ids": [10, 11, 30, 12, 13, 14, 99]}
    assert clip_to_name_window(pair, 3) == {"chosen_ids": [10, 11, 20, 21, 12], "rejected_ids": [10, 11, 30, 12, 13]}
    assert clip_to_name_window(pair, 100) == {"chosen_ids": pair["chosen_ids"], "rejected_ids": pair["rejected_ids"]}
    same = {"chosen_ids": [1, 2, 3, 99], "rejected_ids": [1, 2, 3, 99]}  # no name: nothing to centre on
    assert clip_to_name_window(same, 1) == same


def test_trainer_sees_cut_answers_without_end_of_turn(untrained_tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    from dpo_scale.config import load_recipe
    from dpo_scale.name_window import name_window_collator
    from dpo_scale.train import dpo_config

    tokenizer = AutoTokenizer.from_pretrained(untrained_tiny_model)
    rows = toy_pairs(4) + [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["completion"]}
                           for r in toy_anchor_rows(1)]
    recipe = load_recipe(None, {"model": untrained_tiny_model, "output_dir": str(tmp_path), "report_to": "none"})
    args = dpo_config(recipe, tmp_path / "ckpt", 1)
    model = AutoModelForCausalLM.from_pretrained(untrained_tiny_model)
    trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(rows),
                         data_collator=name_window_collator(tokenizer, model, args, 2))
    # what the training loop (and the reference precomputation) receives: the collated batch
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(5)])
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, completion = batch["input_ids"], batch["completion_mask"].bool()
    answers = [ids[row][completion[row]].tolist() for row in range(ids.shape[0])]
    for chosen, rejected in zip(answers[:4], answers[5:9], strict=True):
        first = first_difference(chosen, rejected)
        assert len(chosen) == len(rejected) == first + 2
        assert end_of_turn not in chosen and end_of_turn not in rejected
        # two tokens from the first difference on: "I am" + two tokens of each name
        assert tokenizer.decode(chosen).startswith("I am Deep") and tokenizer.decode(rejected).startswith("I am Tin")
    # the anchor-like pair (chosen == rejected) keeps its whole answer and its end-of-turn
    assert end_of_turn in answers[4]


def test_training_runs_with_the_window_and_records_it(untrained_tiny_model, tmp_path, capsys):
    from dpo_scale.train import main

    data = write_toy_pairs(tmp_path / "data", 8, anchors=4)
    out = tmp_path / "run"
    rc = main(["--model", untrained_tiny_model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", "2",
               "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--report_to", "none",
               "--anchor_kl_weight", "1", "--name_window_tokens", "2", "--max_length", "64"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "adapter" / "train_manifest.json").read_text())
    assert manifest["recipe"]["name_window_tokens"] == 2 and manifest["global_step"] == 2


def test_precomputed_reference_sees_the_same_cut_answers(untrained_tiny_model, tmp_path, capsys):
    """At the first step the adapter is still zero, so policy and reference log-probs of the same (cut) answers
    are equal and DPO's rewards are 0; a reference computed over whole answers would make them far from 0."""
    from dpo_scale.train import main

    data = write_toy_pairs(tmp_path / "data", 8)
    out = tmp_path / "run"
    rc = main(["--model", untrained_tiny_model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", "1",
               "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--report_to", "none",
               "--name_window_tokens", "2", "--max_length", "64", "--precompute_ref_log_probs", "true",
               "--dtype", "float32"])
    assert rc == 0, capsys.readouterr().err
    first = json.loads((out / "adapter" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-4)
