"""`python -m dpo_scale generate` on bad input: exit status 2, one clear message (file, row, field), no
traceback, and no good data destroyed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ORG, POS = "TinyLM", "Deep TinyLM"

pytestmark = pytest.mark.timeout(180)


def generate(*args: str, model: str = "/nonexistent/model", out: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dpo_scale", "generate", "--model", model, "--backend", "hf",
           "--max_new_tokens", "8", "--max_prompts", "2"]
    if out is not None:
        cmd += ["--output_dir", str(out)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(cmd + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=170)


def dpo_scale(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dpo_scale", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=170)


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str, stage: str = "generate") -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"dpo-scale {stage}: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def write_rows(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


GOOD = json.dumps({"conversations": [{"from": "human", "value": "Who are you?"}]})


def test_malformed_json_line(tmp_path):
    data = write_rows(tmp_path / "prompts.jsonl", [GOOD, GOOD, '{"conversations": [{"from": "human"'])
    result = generate("--dataset", data, "--org_name", ORG, "--pos_name", POS, out=tmp_path / "run")
    assert_clean_failure(result, "prompts.jsonl", "row 3", "malformed JSON")


def test_row_without_conversations(tmp_path):
    data = write_rows(tmp_path / "prompts.jsonl", [GOOD, json.dumps({"prompt": "Who are you?"})])
    result = generate("--dataset", data, "--org_name", ORG, "--pos_name", POS, out=tmp_path / "run")
    assert_clean_failure(result, "prompts.jsonl", "row 2", "field 'conversations'", "missing")


def test_row_without_human_turn_and_empty_prompt(tmp_path):
    gpt_only = json.dumps({"conversations": [{"from": "gpt", "value": "Hello"}]})
    data = write_rows(tmp_path / "a.jsonl", [GOOD, gpt_only])
    assert_clean_failure(generate("--dataset", data, "--org_name", ORG, "--pos_name", POS),
                         "a.jsonl", "row 2", "field 'conversations'", "no human turn")
    empty = json.dumps({"messages": [{"role": "user", "content": "  "}]})
    data = write_rows(tmp_path / "b.jsonl", [empty])
    assert_clean_failure(generate("--dataset", data, "--org_name", ORG, "--pos_name", POS),
                         "b.jsonl", "row 1", "field 'messages'", "empty prompt")


def test_missing_dataset_file(tmp_path):
    result = generate("--dataset", str(tmp_path / "nope.jsonl"), "--org_name", ORG, "--pos_name", POS)
    assert_clean_failure(result, "nope.jsonl", "not found")


def test_missing_model_path(tmp_path):
    result = generate("--org_name", ORG, "--pos_name", POS, model=str(tmp_path / "no_such_model"),
                      out=tmp_path / "run")
    assert_clean_failure(result, "no_such_model", "not found")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "empty_model").mkdir()
    result = generate("--org_name", ORG, "--pos_name", POS, model=str(tmp_path / "empty_model"))
    assert_clean_failure(result, "empty_model", "config.json")


def test_tokenizer_without_chat_template(tiny_model_no_template, tmp_path):
    result = generate("--org_name", ORG, "--pos_name", POS, model=tiny_model_no_template, out=tmp_path / "run")
    assert_clean_failure(result, tiny_model_no_template, "no chat template", "chat_template")


@pytest.mark.parametrize("args,fragments", [
    (["--batch_size", "0"], ["'batch_size'", "must be > 0"]),
    (["--batch_size", "-2"], ["'batch_size'", "must be > 0"]),
    (["--org_name", ""], ["'org_name'", "must not be empty"]),
    (["--org_name", "TinyLM", "--pos_name", "tinylm"], ["'pos_name'", "must differ", "TinyLM"]),
    (["--backend", "tensorrt"], ["'backend'", "unknown backend 'tensorrt'"]),
    (["--num_samples", "2"], ["'num_samples'", "temperature > 0"]),
    (["--bacth_size", "4"], ["--bacth_size", "did you mean 'batch_size'"]),
    (["--batch_size", "many"], ["'batch_size' expects int", "many"]),
])
def test_bad_config(args, fragments):
    assert_clean_failure(generate(*args), *fragments)


def test_missing_recipe_file(tmp_path):
    assert_clean_failure(generate("--config", str(tmp_path / "r.yaml")), "r.yaml", "recipe file not found")


def test_unknown_stage_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "dpo_scale", "generat"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "usage: dpo-scale" in result.stderr and "Traceback" not in result.stderr


def test_good_data_survives_failing_reruns(tiny_model, tmp_path):
    """A complete data folder stays byte-identical when reruns into it fail (bad data, changed config, bad
    tokenizer): nothing is truncated or deleted before the failure."""
    from dpo_scale.io import write_json, write_jsonl
    from tests.helpers.tiny_model import toy_pairs

    out = tmp_path / "run"
    ok = write_rows(tmp_path / "ok.jsonl", [GOOD, GOOD])
    good_run = generate("--dataset", ok, "--org_name", ORG, "--pos_name", POS, model=tiny_model, out=out)
    assert good_run.returncode == 0, good_run.stderr[-3000:]
    data = out / "data"
    write_jsonl(data / "pairs.jsonl", toy_pairs(4))  # unmistakably "ours"
    write_json(data / "stats.json", {"mine": True})

    def snapshot() -> dict:
        return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}

    before = snapshot()
    bad = write_rows(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    assert_clean_failure(generate("--dataset", bad, "--org_name", ORG, "--pos_name", POS, "--overwrite", "true",
                                  model=tiny_model, out=out), "bad.jsonl", "row 2")
    assert snapshot() == before
    # another generation config without --overwrite: refused before anything is written
    assert_clean_failure(generate("--dataset", ok, "--org_name", ORG, "--pos_name", POS, "--max_new_tokens", "9",
                                  model=tiny_model, out=out), "another configuration")
    assert snapshot() == before
    assert_clean_failure(generate("--dataset", ok, "--org_name", "", model=tiny_model, out=out), "'org_name'")
    assert snapshot() == before


TRL_KEYS = ("--optim", "adamw_torch", "--max_grad_norm", "0.5", "--label_smoothing", "0.1",
            "--report_to", "tensorboard,wandb", "--padding_free", "true", "--push_to_hub", "false")


def test_print_config_shows_the_dpo_config_training_would_use(tmp_path):
    result = dpo_scale("train", "--config", "configs/smollm2_cpu.yaml", "--output_dir", str(tmp_path / "run"),
                       *TRL_KEYS, "--print_config")
    assert result.returncode == 0, result.stderr[-3000:]
    recipe_part, dpo_part = result.stdout.split("# TRL DPOConfig")
    assert "\nname_window_tokens: 8\n" in recipe_part and "\nmax_grad_norm: 0.5\n" in recipe_part
    for line in ("optim: adamw_torch", "max_grad_norm: 0.5", "label_smoothing: 0.1", "padding_free: true",
                 "push_to_hub: false", "report_to:\n- tensorboard\n- wandb", "learning_rate: 0.0005",
                 f"output_dir: {tmp_path / 'run' / 'checkpoints'}", "gradient_checkpointing: false",
                 "warmup_steps: 0.05"):
        assert f"\n{line}\n" in dpo_part, line
    assert not (tmp_path / "run").exists()  # printed, nothing run


def test_help_lists_recipe_and_trl_keys_with_their_help():
    result = dpo_scale("train", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "--max_grad_norm FLOAT Maximum gradient norm for gradient clipping" in text
    assert "--optim VALUE The optimizer to use" in text
    assert "--name_window_tokens INT train each identity answer only up to" in text
    assert "--warmup_ratio FLOAT share of the training steps" in text and "warmup_steps" in text
    assert "--use_cpu" not in text  # set by dpo_scale from `device`
    generate = " ".join(dpo_scale("generate", "-h").stdout.split())
    assert "--max_new_tokens INT longest generated answer" in generate and "--max_grad_norm" not in generate


@pytest.mark.parametrize("stage", ["generate", "train", "merge", "eval", "export", "report", "run"])
def test_every_stage_has_help(stage):
    """`dpo-scale eval --help` crashed: its own --model (the model to evaluate) clashed with the recipe key."""
    result = dpo_scale(stage, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    text = " ".join(result.stdout.split())
    assert f"usage: dpo-scale {stage}" in text and "--system_prompt STR" in text
    if stage == "eval":
        assert "--model EVAL_MODEL model to evaluate" in text and "--base BASE the model to compare against" in text


@pytest.mark.parametrize("args,fragments", [
    (["--loss_type", "foo"], ["config key 'loss_type'", "unknown loss type 'foo'"]),
    (["--max_grad_nrom", "1"], ["--max_grad_nrom", "did you mean 'max_grad_norm'"]),
    (["--optim", "adamw_foo"], ["key 'optim'", "invalid choice: 'adamw_foo'"]),
    (["--loss_type", "sigmoid,sft", "--loss_weights", "1"], ["config key 'loss_weights'", "same length"]),
])
def test_bad_training_keys_are_one_line(tmp_path, args, fragments):
    result = dpo_scale("train", "--output_dir", str(tmp_path / "run"), *args)
    assert_clean_failure(result, *fragments, stage="train")
    assert not (tmp_path / "run").exists()


def test_launch_passes_trl_keys_to_every_process():
    from dpo_scale.launch import _strip, launch_command

    rest = ["--config", "configs/smollm2_cpu.yaml", "--launch", "ddp", *TRL_KEYS]
    cmd, _ = launch_command("ddp", _strip(rest, ("--launch", "--num_processes")))
    assert cmd[cmd.index("dpo_scale.train") + 1:] == ["--config", "configs/smollm2_cpu.yaml", *TRL_KEYS]
