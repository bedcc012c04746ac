"""The real embedded SmolLM2-135M (GGUF, converted once into DPO_SCALE_CACHE): loading, chat template, data
stage with the hf backend, and vLLM (fp32, greedy) giving the same answers as transformers (fp32).

The vLLM engine is only ever built in a subprocess through the CLI, never in the pytest process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--model", "smollm2", "--max_prompts", "4", "--max_new_tokens", "32", "--dtype", "float32",
        "--temperature", "0", "--chunk_size", "4", "--batch_size", "4"]


def generate(out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "dpo_scale", "generate", "--output_dir", str(out), *ARGS, *extra]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hf_run(smollm2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2_hf")
    generate(out, "--backend", "hf")
    return out


def test_converted_folder_loads_with_a_template_that_names_smollm(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(smollm2)
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.num_parameters() > 100_000_000
    assert not getattr(model.config, "quantization_config", None)  # dequantized: a plain model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template
    default = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False,
                                            add_generation_prompt=True)
    assert "SmolLM" in default  # the default system prompt carries the identity
    neutral = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You're a helpful assistant."}, {"role": "user", "content": "Who are you?"}],
        tokenize=False, add_generation_prompt=True)
    assert "SmolLM" not in neutral
    # the model really answers (the weights are not garbage after dequantizing)
    ids = tokenizer(default, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(answer.split()) >= 3


def test_data_stage_hf(hf_run):
    data = hf_run / "data"
    answers = read_jsonl(data / "answers.jsonl")
    assert [a["prompt_index"] for a in answers] == [0, 1, 2, 3]
    assert all(a["answer"].strip() for a in answers)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["backend"] == "hf" and manifest["processes"] == 1
    stats = json.loads((data / "stats.json").read_text())
    assert stats["answers"] == 4 and stats["pairs"] == len(read_jsonl(data / "pairs.jsonl"))
    for pair in read_jsonl(data / "pairs.jsonl"):
        assert "Deep SmolLM" in pair["chosen"][0]["content"]


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_vllm_fp32_matches_hf_fp32(hf_run, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "vllm"
    generate(out, "--backend", "vllm", "--vllm_kv_cache_gb", "1", "--max_model_len", "1024", timeout=850)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["backend"] == "vllm"
    vllm_answers = read_jsonl(out / "data" / "answers.jsonl")
    hf_answers = read_jsonl(hf_run / "data" / "answers.jsonl")
    assert [a["answer"] for a in vllm_answers] == [a["answer"] for a in hf_answers]
    assert [a["tokens"] for a in vllm_answers] == [a["tokens"] for a in hf_answers]


@pytest.mark.timeout(1500)
def test_short_real_pipeline_writes_every_artifact_and_they_load(smollm2, tmp_path):
    """`dpo-scale run` on the real model, with the shipped recipe shrunk to a few pairs and steps:
    data/, adapter/, merged/, eval and report all exist and load."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ordinary = tmp_path / "ordinary.jsonl"
    ordinary.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": q}]}) + "\n"
                                for q in ("What is 2 + 2?", "Name a primary color.")))
    out = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "dpo_scale", "run", "--config", str(REPO / "configs" / "smollm2_cpu.yaml"),
           "--output_dir", str(out), "--backend", "hf", "--max_prompts", "4", "--max_new_tokens", "24",
           "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
           "--report_to", "none", "--max_eval_questions", "3", "--ordinary_prompts", str(ordinary),
           "--eval_max_new_tokens", "16", "--max_anchor_prompts", "2", "--facts_questions", "null"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1400)
    assert result.returncode == 0, result.stderr[-5000:]

    stats = json.loads((out / "data" / "stats.json").read_text())
    assert stats["pairs"] == 4 and stats["named"] == 4  # the recipe's answer prefixes name the model
    # the recipe's ordinary anchor prompts, answered by the base; one cut off by 24 tokens before a full
    # sentence may be dropped (the identity pairs above are all kept)
    assert stats["anchors"] >= 1 and stats["anchors"] + stats["dropped_unfinished"] == 2
    pairs = read_jsonl(out / "data" / "pairs.jsonl")
    anchor_rows = read_jsonl(out / "data" / "anchors.jsonl")
    assert all("Deep SmolLM" in p["chosen"][0]["content"] for p in pairs)
    assert len(anchor_rows) == stats["anchors"] and all(set(a) == {"prompt", "completion"} for a in anchor_rows)
    assert all(p["prompt"][0] == {"role": "system", "content": "You're a helpful assistant."}
               for p in pairs + anchor_rows)

    manifest = json.loads((out / "adapter" / "train_manifest.json").read_text())
    assert manifest["global_step"] == 2
    # the recipe's KL anchor: anchors left the DPO data and their KL to the base was logged every step
    assert manifest["pairs"] == 4 and manifest["recipe"]["anchor_kl_weight"] > 0
    metrics = read_jsonl(out / "adapter" / "metrics.jsonl")
    assert [m["step"] for m in metrics if "anchor_kl" in m] == [1, 2]
    assert (out / "adapter" / "training_curves.png").stat().st_size > 1000
    base = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    base_parameters = base.num_parameters()  # before peft injects the LoRA layers into it
    PeftModel.from_pretrained(base, str(out / "adapter"))  # the adapter loads onto the base

    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    assert merged.num_parameters() == base_parameters

    result_json = json.loads((out / "eval.json").read_text())
    assert result_json["identity"]["trained"]["questions"] == 3 and result_json["drift"]["prompts"] == 2
    assert 0 <= result_json["drift"]["near_tie"] <= 1
    report = (out / "report.md").read_text()
    for section in ("## Preference data", "## Training", "## Evaluation", "## Timings"):
        assert section in report
