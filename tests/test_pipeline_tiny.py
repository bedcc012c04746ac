"""`dpo-scale run` end to end on the tiny model: data -> train -> merge -> eval -> report, then a rerun that
skips every stage."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("data", "train", "merge", "eval")


def run_pipeline(model: str, out: Path, ordinary: Path, anchors: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dpo_scale", "run", "--model", model, "--output_dir", str(out),
           "--org_name", "TinyLM", "--pos_name", "Deep TinyLM", "--backend", "hf",
           "--max_prompts", "24", "--max_new_tokens", "16", "--chunk_size", "24", "--batch_size", "24",
           "--max_steps", "3", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
           "--learning_rate", "5e-3", "--max_length", "64", "--save_steps", "100", "--report_to", "none",
           "--max_eval_questions", "10", "--eval_max_new_tokens", "16", "--ordinary_prompts", str(ordinary),
           "--anchor_prompts", str(anchors)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=560)


@pytest.mark.timeout(600)
def test_run_writes_everything_then_skips_everything(tiny_model, tmp_path):
    ordinary = tmp_path / "ordinary.jsonl"
    ordinary.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": q}]}) + "\n" for q in (
        "What is the capital of France?", "What is 3 + 4?", "Write one sentence about the sea.")))
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": q}]}) + "\n" for q in (
        "Name a fruit.", "What is 2 + 5?", "Write a word about snow.", "Who wrote Hamlet?")))
    out = tmp_path / "run"

    first = run_pipeline(tiny_model, out, ordinary, anchors)
    assert first.returncode == 0, first.stderr[-5000:]

    for path in ("data/pairs.jsonl", "data/stats.json", "data/manifest.json", "data/answers.jsonl",
                 "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/train_manifest.json",
                 "adapter/metrics.jsonl", "merged/model.safetensors", "merged/config.json",
                 "merged/merge_manifest.json", "eval.json", "eval.md", "report.md", "timings.json", "recipe.json"):
        assert (out / path).is_file(), path

    stats = json.loads((out / "data" / "stats.json").read_text())
    assert stats["prompts"] == 24 and stats["pairs"] > 0 and stats["anchors"] == 4
    pairs = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    anchor_rows = [json.loads(line) for line in (out / "data" / "anchors.jsonl").read_text().splitlines()]
    assert len(pairs) == stats["pairs"] and len(anchor_rows) == stats["anchors"]  # anchors in a file of their own
    assert [a["prompt"][-1]["content"] for a in anchor_rows][0] == "Name a fruit."
    assert all(set(a) == {"prompt", "completion"} for a in anchor_rows)
    assert all(p["prompt"][0] == {"role": "system", "content": "You're a helpful assistant."}
               for p in pairs + anchor_rows)
    train_manifest = json.loads((out / "adapter" / "train_manifest.json").read_text())
    assert train_manifest["global_step"] == 3 and train_manifest["pairs"] == stats["pairs"] + stats["anchors"]
    result = json.loads((out / "eval.json").read_text())
    assert result["identity"]["base"]["questions"] == 10
    assert result["identity"]["base"]["named_any"] > 0  # the tiny model calls itself TinyLM
    assert result["drift"]["prompts"] == 3
    assert result["drift"]["kl_per_token"] >= 0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == set(STAGES)
    assert all(not t["skipped"] and t["seconds"] >= 0 for t in timings.values())

    report = (out / "report.md").read_text()
    assert "## Preference data" in report
    assert "| prompts | answers | naming the model | pairs kept |" in report
    assert (f"| {stats['prompts']} | {stats['answers']} | {stats['named']} | {stats['pairs']} | "
            f"{stats['dropped_unnamed']} |") in report
    png = re.search(r"!\[training curves\]\(([^)]+)\)", report)
    assert png, "report has no training-curves image"
    assert (out / png.group(1)).is_file() and (out / png.group(1)).read_bytes()[:4] == b"\x89PNG"
    assert "## Evaluation" in report and "### Identity (10 held-out questions" in report
    assert '| answers with "Deep TinyLM" |' in report
    assert "## Timings" in report
    for stage in STAGES:
        assert re.search(rf"^\| {stage} \| [0-9.]+ \|$", report, re.M), stage

    marker_mtimes = {p: (out / p).stat().st_mtime_ns for p in (
        "data/manifest.json", "adapter/train_manifest.json", "merged/model.safetensors", "eval.json")}
    second = run_pipeline(tiny_model, out, ordinary, anchors)
    assert second.returncode == 0, second.stderr[-5000:]
    for stage in STAGES:
        assert re.search(rf"stage {stage}: complete .*skipped", second.stderr), stage
        assert f"stage {stage}: running" not in second.stderr
    assert {p: (out / p).stat().st_mtime_ns for p in marker_mtimes} == marker_mtimes
    assert "## Evaluation" in (out / "report.md").read_text()
