"""Rerunning `dpo-scale run` into a finished folder: a changed setting is refused (naming it) or, with
--overwrite true, the stages it touches are redone; report.md always tells what the outputs were made with.
And one command per output folder: a second one refuses at once, a killed one leaves no stale lock."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def env() -> dict:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_cmd(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dpo_scale", "run", "--model", model, "--output_dir", str(out),
            "--org_name", "TinyLM", "--pos_name", "Deep TinyLM", "--backend", "hf",
            "--max_prompts", "12", "--max_new_tokens", "16", "--chunk_size", "12", "--batch_size", "12",
            "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
            "--beta", "0.1", "--learning_rate", "5e-4", "--max_length", "64", "--save_steps", "100",
            "--report_to", "none", "--max_eval_questions", "4", "--eval_max_new_tokens", "8",
            "--ordinary_prompts", str(out.parent / "ordinary.jsonl"), *extra]


def run(cmd: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rerun")
    (root / "ordinary.jsonl").write_text("".join(json.dumps({"conversations": [{"from": "human", "value": q}]}) + "\n"
                                                 for q in ("What is 3 + 4?", "Name a colour.")))
    out = root / "run"
    first = run(run_cmd(tiny_model, out))
    assert first.returncode == 0, first.stderr[-5000:]
    return out


def outputs(out: Path) -> dict[str, int]:
    return {p: (out / p).stat().st_mtime_ns for p in (
        "data/manifest.json", "adapter/train_manifest.json", "adapter/adapter_model.safetensors",
        "merged/merge_manifest.json", "eval.json", "report.md")}


@pytest.mark.timeout(900)
def test_a_changed_training_key_is_refused_then_redone_with_overwrite(tiny_model, finished):
    out = finished
    report = (out / "report.md").read_text()
    assert "beta 0.1, lr 0.0005" in report
    before = outputs(out)

    # The defect: this used to skip every stage and relabel the report "beta 0.2, lr 0.0001".
    changed = run(run_cmd(tiny_model, out, "--beta", "0.2", "--learning_rate", "1e-4"))
    assert changed.returncode == 2, changed.stderr[-3000:]
    line = changed.stderr.strip().splitlines()[-1]
    assert "train: beta 0.1 -> 0.2, learning_rate 0.0005 -> 0.0001" in line, line
    assert "--overwrite true" in line and "Traceback" not in changed.stderr
    assert "stage data" not in changed.stderr  # refused before any stage ran
    assert outputs(out) == before
    assert (out / "report.md").read_text() == report

    redo = run(run_cmd(tiny_model, out, "--beta", "0.2", "--learning_rate", "1e-4", "--overwrite", "true"))
    assert redo.returncode == 0, redo.stderr[-5000:]
    assert re.search(r"stage data: complete .*skipped", redo.stderr)
    for stage in ("train", "merge", "eval"):
        assert f"stage {stage}: running" in redo.stderr, stage
    assert "stage train: redone (beta 0.1 -> 0.2, learning_rate 0.0005 -> 0.0001)" in redo.stderr
    after = outputs(out)
    assert after["data/manifest.json"] == before["data/manifest.json"]
    assert all(after[p] != before[p] for p in after if not p.startswith("data/"))
    manifest = json.loads((out / "adapter" / "train_manifest.json").read_text())
    assert manifest["fingerprint"]["keys"]["beta"] == 0.2 and manifest["fingerprint"]["keys"]["learning_rate"] == 1e-4
    assert "beta 0.2, lr 0.0001" in (out / "report.md").read_text()

    # The same command again: nothing differs, every stage is skipped and the report keeps its settings.
    again = run(run_cmd(tiny_model, out, "--beta", "0.2", "--learning_rate", "1e-4"))
    assert again.returncode == 0, again.stderr[-5000:]
    for stage in ("data", "train", "merge", "eval"):
        assert re.search(rf"stage {stage}: complete .*skipped", again.stderr), stage
    assert "beta 0.2, lr 0.0001" in (out / "report.md").read_text()

    # A key no stage reads (batch_size) changes nothing.
    other = run(run_cmd(tiny_model, out, "--beta", "0.2", "--learning_rate", "1e-4", "--eval_batch_size", "3"))
    assert other.returncode == 0 and "running" not in other.stderr, other.stderr[-3000:]

    # An input file's hash is part of the fingerprint: edit the drift prompts and only eval is stale.
    with open(out.parent / "ordinary.jsonl", "a") as f:
        f.write(json.dumps({"conversations": [{"from": "human", "value": "Name a tree."}]}) + "\n")
    cmd = run_cmd(tiny_model, out, "--beta", "0.2", "--learning_rate", "1e-4")
    refused = run(cmd)
    assert refused.returncode == 2
    assert "(eval: input ordinary_prompts changed)" in refused.stderr.strip().splitlines()[-1]
    redo = run(cmd + ["--overwrite", "true"])
    assert redo.returncode == 0, redo.stderr[-5000:]
    assert [s for s in ("data", "train", "merge", "eval") if f"stage {s}: running" in redo.stderr] == ["eval"]
    assert json.loads((out / "eval.json").read_text())["drift"]["prompts"] == 3


def test_report_is_written_from_the_manifests(finished, tmp_path):
    """report.md prints the settings recorded by the stages, whatever recipe writes it."""
    import shutil

    from dpo_scale.config import Recipe
    from dpo_scale.report import write_report

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    recorded = json.loads((out / "adapter" / "train_manifest.json").read_text())["fingerprint"]["keys"]
    report = write_report(Recipe(output_dir=str(out), beta=9.0, learning_rate=0.5, org_name="X", pos_name="Y",
                                 temperature=1.7, num_samples=5), {}).read_text()
    assert f"beta {recorded['beta']}, lr {recorded['learning_rate']}" in report
    assert "beta 9.0" not in report and "lr 0.5" not in report and "temperature 1.7" not in report
    assert report.startswith("# dpo_scale run: TinyLM → Deep TinyLM")


HOLD = """
import sys, time
from dpo_scale.run_lock import output_lock
with output_lock(sys.argv[1], "run"):
    print("locked", flush=True)
    time.sleep(300)
"""


@pytest.mark.timeout(120)
def test_second_command_into_one_folder_refuses_and_a_killed_one_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.time()
        second = run([sys.executable, "-m", "dpo_scale", "run", "--output_dir", str(out), "--model", "none/none"])
        assert second.returncode == 2
        assert time.time() - started < 60
        message = second.stderr.strip().splitlines()[-1]
        assert f"{out}: already in use by `dpo-scale run` (pid {holder.pid})" in message, message
        assert "Traceback" not in second.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder's lock went with it: the folder can be taken again at once.
    from dpo_scale.run_lock import output_lock

    with output_lock(out, "generate"):
        assert "generate" in (out / ".dpo_scale.lock").read_text()


def test_a_command_that_fails_on_bad_input_leaves_no_folder(tmp_path):
    out = tmp_path / "new"
    failed = run([sys.executable, "-m", "dpo_scale", "generate", "--output_dir", str(out),
                  "--dataset", str(tmp_path / "missing.jsonl")])
    assert failed.returncode == 2 and "missing.jsonl" in failed.stderr
    assert not out.exists()


def test_train_stage_alone_refuses_to_replace_an_adapter_trained_otherwise(tiny_model, finished, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns(".dpo_scale.lock"))
    recorded = json.loads((out / "adapter" / "train_manifest.json").read_text())["fingerprint"]["keys"]
    cmd = [c if c != "run" else "train" for c in run_cmd(tiny_model, out, "--beta", "0.7",
                                                         "--learning_rate", str(recorded["learning_rate"]))]
    before = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    refused = run(cmd)
    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr.strip().splitlines()[-1]
    assert f"holds an adapter trained with other settings (beta {recorded['beta']} -> 0.7)" in message, message
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == before
