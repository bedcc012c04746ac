"""name_window_tokens (dpo_scale/name_window.py): identity answers cut a few tokens past the name before TRL's
DPO sees them, the end-of-turn left out; answers without a name left whole."""

import json

import pytest

from dpo_scale.name_window import clip_to_name_window, first_difference
from tests.helpers.tiny_model import adapter_kl, toy_anchor_rows, toy_pairs, write_toy_pairs

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


def test_identity_tails_start_past_the_window_and_skip_rows_without_one():
    from dpo_scale.anchor_kl import identity_tails
    from dpo_scale.name_window import tail_start

    assert tail_start([10, 11, 20, 21, 12, 13, 99], [10, 11, 30, 12, 13, 99], 2) == 4
    assert tail_start([1, 2, 99], [1, 2, 99], 2) is None
    rows = [{"prompt_ids": [5, 6], "chosen_ids": [10, 11, 20, 21, 12, 13, 99],
             "rejected_ids": [10, 11, 30, 12, 13, 99]},
            {"prompt_ids": [5], "chosen_ids": [1, 2, 99], "rejected_ids": [1, 2, 99]},  # no name
            {"prompt_ids": [5], "chosen_ids": [20, 99], "rejected_ids": [30, 99]}]  # nothing past the window
    assert identity_tails(rows, 2, None) == [([5, 6, 10, 11, 20, 21, 12, 13, 99], 6)]
    assert identity_tails(rows, 2, 6) == []  # max_length cuts the tail away
    # identity_tail_tokens: the first N tokens past the window, the prompt and window kept whole
    assert identity_tails(rows, 2, None, 2) == [([5, 6, 10, 11, 20, 21, 12, 13], 6)]
    assert identity_tails(rows, 2, None, 100) == identity_tails(rows, 2, None)


def test_identity_tail_tokens_must_be_positive():
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.errors import DpoScaleError

    with pytest.raises(DpoScaleError, match="identity_tail_tokens"):
        load_recipe(None, parse_overrides(["--identity_tail_tokens", "0"]))


def _tail_kl(model: str, adapter, rows: list[dict], window: int) -> float:
    """Mean per-token KL(base || base + adapter) on the chosen answers' tokens past the name window."""
    from transformers import AutoTokenizer

    from dpo_scale.anchor_kl import tokenize_anchor
    from dpo_scale.name_window import tail_start

    tokenizer = AutoTokenizer.from_pretrained(model)
    tails = []
    for row in rows:
        chosen, plen = tokenize_anchor(tokenizer, {"prompt": row["prompt"], "completion": row["chosen"]}, None)
        rejected, _ = tokenize_anchor(tokenizer, {"prompt": row["prompt"], "completion": row["rejected"]}, None)
        tails.append((chosen, plen + tail_start(chosen[plen:], rejected[plen:], window)))
    return adapter_kl(model, adapter, tails)


def test_hold_identity_tails_keeps_the_rest_of_identity_answers_near_the_base(tiny_model, tmp_path, capsys):
    """Same data and steps: with hold_identity_tails the chosen answers past the name window stay far closer to
    the base than without it, where nothing holds them (the window keeps them out of DPO and SFT alike)."""
    from dpo_scale.io import write_jsonl
    from dpo_scale.train import main

    rest = ["I like to help people with their questions.", "Ask me anything about cooking or travel.",
            "I can write, explain and summarise texts.", "How can I help you today?"]
    rows = [{**pair,
             "chosen": [{"role": "assistant", "content": pair["chosen"][0]["content"] + " " + rest[i % 4]}],
             "rejected": [{"role": "assistant", "content": pair["rejected"][0]["content"] + " " + rest[i % 4]}]}
            for i, pair in enumerate(toy_pairs(16))]
    data = tmp_path / "data"
    write_jsonl(data / "pairs.jsonl", rows)
    write_jsonl(data / "anchors.jsonl", toy_anchor_rows(8))
    kl = {}
    for hold in ("false", "true"):
        out = tmp_path / f"hold-{hold}"
        rc = main(["--model", tiny_model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", "8",
                   "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                   "--learning_rate", "1e-2", "--warmup_ratio", "0", "--lr_scheduler_type", "constant",
                   "--loss_type", "sigmoid,sft", "--max_length", "64", "--report_to", "none",
                   "--anchor_kl_weight", "20", "--name_window_tokens", "2", "--hold_identity_tails", hold])
        assert rc == 0, capsys.readouterr().err
        kl[hold] = _tail_kl(tiny_model, out / "adapter", rows[:4], 2)
    assert kl["false"] > 0.01, kl  # the edit moved the tails when nothing held them
    assert kl["true"] < 0.5 * kl["false"], kl


def test_hold_identity_tails_needs_the_window_and_the_anchor():
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.errors import DpoScaleError

    with pytest.raises(DpoScaleError, match="hold_identity_tails"):
        load_recipe(None, parse_overrides(["--hold_identity_tails", "true", "--anchor_kl_weight", "1"]))
