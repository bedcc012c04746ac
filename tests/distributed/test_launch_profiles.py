"""Every launch profile really runs: tiny DPO + LoRA trainings under `accelerate launch`, 2 processes over gloo
on this CPU (DDP, DeepSpeed ZeRO-2/ZeRO-3/ZeRO-3 offload), with the world size read back from the run.

Both command forms are covered: `python -m accelerate.commands.launch --config_file launch/<p>.yaml -m
dpo_scale.train ...` and `python -m dpo_scale train --launch <p> ...` (built by dpo_scale/launch.py).
The first DeepSpeed run on a machine JIT-compiles its shm comm op (~70 s) and, for offload, cpu_adam (minutes on
2 busy cores); both are cached in ~/.cache/torch_extensions.

Not here: FSDP. accelerate 1.15 switches to FSDP only from a multi-GPU/NPU/XPU/HPU state; on CPU (MULTI_CPU) it
ignores the FSDP plugin and trains plain data parallel, so there is no launch/fsdp.yaml and dpo_scale.train
refuses an FSDP launch on a machine without CUDA.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny_model import write_toy_pairs

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")


@pytest.fixture(autouse=True)
def cpu_or_two_gpus(request):
    """These runs are sized for a CPU machine (gloo); on CUDA every rank needs a GPU of its own."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < 2 and "cpu]" not in request.node.name:
        pytest.skip("2-process runs on a CUDA machine need 2 GPUs")

BF16_ZERO3 = ["--bf16", "true", "--dtype", "bfloat16", "--gradient_checkpointing", "true"]
PRECOMPUTE = ["--precompute_ref_log_probs", "true"]
ANCHOR_KL = ["--anchor_kl_weight", "1"]  # a third forward per micro-step (adapter on and off) under DeepSpeed/DDP

# (profile, command form, extra recipe keys, processes, accelerate's distributed type)
CASES = [
    pytest.param("cpu", "dpo-scale", [], 1, "NO", id="cpu"),
    # ddp: see test_ddp_kill_9_and_resume (the rerun is the profile's run)
    pytest.param("zero2", "dpo-scale", PRECOMPUTE, 2, "DEEPSPEED", id="zero2-precompute", marks=needs_deepspeed),
    # ZeRO-3 traps in one run: bf16 base + LoRA (trl issue 6089 / DeepSpeed issue 8072), gradient checkpointing
    # (trl issue 2514: reentrant), precomputed reference log-probs, and the gathered (non-empty) adapter on save.
    pytest.param("zero3", "accelerate", BF16_ZERO3 + PRECOMPUTE, 2, "DEEPSPEED", id="zero3-bf16-gc-precompute",
                 marks=needs_deepspeed),
    pytest.param("zero3_offload", "dpo-scale", ANCHOR_KL, 2, "DEEPSPEED", id="zero3_offload-anchor_kl",
                 marks=needs_deepspeed),
]


@pytest.fixture(scope="module")
def model(untrained_tiny_model) -> str:
    return untrained_tiny_model


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_toy_pairs(tmp_path_factory.mktemp("toy_data"), 16, anchors=8)


def run(cmd: list[str], timeout: int = 840) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def train_args(model: str, data: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return ["--model", model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", str(steps),
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "5e-3",
            "--save_steps", "2", "--save_total_limit", "null", "--max_length", "64", "--lora_r", "8",
            "--lora_alpha", "16", "--report_to", "none", *extra]


def command(form: str, profile: str, processes: int, args: list[str]) -> list[str]:
    from dpo_scale.launch import free_port

    if form == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"launch/{profile}.yaml",
                "--num_processes", str(processes), "--main_process_port", str(free_port()),
                "-m", "dpo_scale.train", *args]
    return [sys.executable, "-m", "dpo_scale", "train", "--launch", profile, *args]


def check_run(out: Path, model: str, processes: int, dist_type: str, steps: int) -> dict:
    """The run's manifest, after checking world size, metrics and a non-empty adapter that peft can load."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = out / "adapter"
    info = json.loads((adapter / "train_manifest.json").read_text())
    assert info["processes"] == processes, info  # the real world size, not N lone copies
    assert info["distributed_type"] == dist_type
    assert info["global_step"] == steps
    rows = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))  # once (rank 0), not per rank
    assert (adapter / "training_curves.png").is_file()
    # ZeRO-3 saves `[0]` placeholders unless weights are gathered on save: non-empty and loadable.
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter))
    assert any(torch.count_nonzero(p) > 0 for n, p in loaded.named_parameters() if "lora_B" in n)
    info["tensor_dtypes"] = {str(t.dtype) for t in tensors.values()}
    return info


@pytest.mark.parametrize("profile, form, extra, processes, dist_type", CASES)
def test_profile_trains(profile, form, extra, processes, dist_type, model, data, tmp_path):
    out = tmp_path / "run"
    result = run(command(form, profile, processes, train_args(model, data, out, *extra)))
    assert result.returncode == 0, result.stdout[-6000:]
    info = check_run(out, model, processes, dist_type, steps=2)
    if "--bf16" in extra and profile == "zero3":
        # TRL passed autocast_adapter_dtype=False under ZeRO-3: the adapter stayed in the base's bf16 (no fp32
        # upcast mixing dtypes in ZeRO-3's coalesced all-gather), and checkpointing was made reentrant.
        assert info["bf16"] is True and info["adapter_dtype"] == "torch.bfloat16"
        assert info["tensor_dtypes"] == {"torch.bfloat16"}
        assert info["gradient_checkpointing"] is True
        assert info["gradient_checkpointing_kwargs"]["use_reentrant"] is True
    if "--anchor_kl_weight" in extra:  # anchors left the DPO data; their KL is logged (rank 0, gathered)
        rows = [json.loads(line) for line in (out / "adapter" / "metrics.jsonl").read_text().splitlines()]
        assert info["pairs"] == 16 and all("anchor_kl" in r for r in rows if "loss" in r)
    if "--precompute_ref_log_probs" in extra:
        # Reference log-probs computed once, cached beside the shared on-disk copy of the pairs.
        assert list((out / "checkpoints" / "pairs_dataset").glob("cache-*.arrow"))


def processes_using(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_text(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_ddp_kill_9_and_resume(model, data, tmp_path):
    """2-process DDP: kill -9 the launch's process group once checkpoint-2 is complete; no rank survives (torch's
    elastic agent puts ranks in sessions of their own), and the same command resumes and ends at step 4."""
    out = tmp_path / "run"
    cmd = command("accelerate", "ddp", 2, train_args(model, data, out, *ANCHOR_KL, steps=4))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    try:
        while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint-2 within 600 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2)
    orphans = processes_using(out)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "ranks outlived kill -9 of the launcher"
    assert not (out / "adapter").exists()
    complete = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")
                      if (p / "trainer_state.json").exists())
    assert complete and complete[-1] < 4

    result = run(cmd)
    assert result.returncode == 0, result.stdout[-6000:]
    info = check_run(out, model, 2, "MULTI_CPU", steps=4)
    assert info["resumed_from"] == str(out / "checkpoints" / f"checkpoint-{complete[-1]}")


def test_fsdp_refused_on_cpu(model, data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("FSDP is refused only on machines without CUDA")
    profile = tmp_path / "fsdp.yaml"
    profile.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n"
                       "  fsdp_version: 2\n  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
                       "num_machines: 1\nnum_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\n"
                       "rdzv_backend: static\nsame_network: true\nuse_cpu: false\n")
    result = run([sys.executable, "-m", "dpo_scale", "train", "--launch", str(profile), "--model", model,
                  "--data_dir", str(data), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
                  "--report_to", "none"], timeout=300)
    assert result.returncode == 2, result.stdout[-3000:]
    assert "FSDP needs GPUs" in result.stdout and "Traceback" not in result.stdout
    assert not (tmp_path / "run").exists()
