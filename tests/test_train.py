"""The training stage in one process: metrics and curves, checkpoint/resume after kill -9, QLoRA, and clear
errors (exit status 2, one message, no traceback). Multi-process profiles: tests/distributed/."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_scale.errors import DpoScaleError
from tests.helpers.tiny_model import write_toy_pairs

REPO = Path(__file__).resolve().parent.parent
STEPS = 6
# The uninterrupted and resumed runs train with the KL anchor: resume must also replay its anchor batches.
ANCHORED = ("--anchor_kl_weight", "1")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def model(untrained_tiny_model) -> str:
    return untrained_tiny_model


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_toy_pairs(tmp_path_factory.mktemp("toy_data"), 32, anchors=8)


def args_for(model: str, data: Path, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return ["--model", model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", str(steps),
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "5e-3",
            "--warmup_ratio", "0", "--lr_scheduler_type", "constant", "--save_steps", "2", "--save_total_limit",
            "null", "--max_length", "64", "--lora_r", "8", "--lora_alpha", "16", "--report_to", "none", *extra]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    from dpo_scale.train import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def manifest(out: Path) -> dict:
    return json.loads((out / "adapter" / "train_manifest.json").read_text())


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(model, data, tmp_path_factory) -> Path:
    """STEPS DPO steps without interruption: the reference for the metrics and the resume tests."""
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import train

    out = tmp_path_factory.mktemp("uninterrupted")
    train(load_recipe(None, parse_overrides(args_for(model, data, out, *ANCHORED))))
    return out


def test_metrics_curves_and_adapter(uninterrupted, model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = uninterrupted / "adapter"
    info = manifest(uninterrupted)
    assert info["processes"] == 1 and info["distributed_type"] == "NO"
    assert info["global_step"] == STEPS and info["resumed_from"] is None
    assert (adapter / "training_curves.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert info["pairs"] == 32  # the 8 anchor rows went to the KL anchor, not the DPO data
    assert all(r["anchor_kl"] >= 0 for r in steps) and any(r["anchor_kl"] > 0 for r in steps)
    # Learnable toy set (the new name always preferred), lr 5e-3: the DPO loss falls below log(2) and the
    # implicit reward margin grows.
    first, last = steps[0], steps[-1]
    assert last["loss"] < first["loss"] - 0.05, [r["loss"] for r in steps]
    assert last["rewards/margins"] > first["rewards/margins"] + 0.05, [r["rewards/margins"] for r in steps]
    assert last["rewards/accuracies"] >= 0.5
    # Final adapter written atomically: no temporary folder left beside it.
    assert not list(uninterrupted.glob(".adapter*"))
    tensors = adapter_tensors(adapter)
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter))
    lora_b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)  # trained (lora_B starts at zero)


def test_resume_after_kill_9(uninterrupted, model, data, tmp_path, capsys):
    """kill -9 the whole process group once a checkpoint is complete; the same command resumes from it and
    ends where an uninterrupted run ends."""
    out = tmp_path / "run"
    argv = args_for(model, data, out, *ANCHORED)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dpo_scale.train", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpts = out / "checkpoints"
    deadline = time.time() + 240
    try:
        while not (ckpts / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint-2 within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "adapter").exists(), "the run finished before the kill"
    complete = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*")
                      if (p / "trainer_state.json").exists())
    assert complete and complete[-1] < STEPS
    # A save torn by the kill (folder without trainer_state.json) must not be resumed from.
    (ckpts / "checkpoint-5").mkdir(exist_ok=True)
    (ckpts / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"")

    rc, err = run_main(argv, capsys)  # the same command again
    assert rc == 0, err[-3000:]
    info, ref = manifest(out), manifest(uninterrupted)
    assert info["global_step"] == ref["global_step"] == STEPS
    assert info["resumed_from"] == str(ckpts / f"checkpoint-{complete[-1]}")
    rows = [json.loads(line) for line in (out / "adapter" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))  # no step logged twice
    # Optimizer, scheduler and RNG state came back: the resumed run ends with the same weights.
    import torch

    resumed, straight = adapter_tensors(out / "adapter"), adapter_tensors(uninterrupted / "adapter")
    assert resumed.keys() == straight.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-3, atol=1e-4)


def test_bf16_autocast_skips_peft_input_cast(model, data, tmp_path, capsys):
    """bf16 base + bf16 autocast: every LoRA layer runs without peft's fp32 input copy (dpo_scale/lora_speed.py),
    and training still learns (finite losses, adapter saved); without autocast nothing is switched off."""
    out = tmp_path / "bf16"
    rc, err = run_main(args_for(model, data, out, "--bf16", "true", "--dtype", "bfloat16", steps=2), capsys)
    assert rc == 0, err[-3000:]
    info = manifest(out)
    assert info["bf16"] is True and info["adapter_dtype"] == "torch.float32"
    assert info["lora_layers_uncast"] > 0
    losses = [json.loads(line)["loss"] for line in (out / "adapter" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    plain = tmp_path / "fp32"
    rc, err = run_main(args_for(model, data, plain, "--dtype", "float32", steps=1), capsys)
    assert rc == 0, err[-3000:]
    assert manifest(plain)["lora_layers_uncast"] == 0


def test_lora_layers_to_transform_adapts_only_those_layers(model, data, tmp_path, capsys):
    """lora_layers_to_transform with all-linear: the trained adapter holds every linear layer of the listed decoder
    layer and nothing else (peft refuses its all-linear shorthand beside a layer list, so dpo_scale names them)."""
    import torch

    from dpo_scale.models import load_model

    out = tmp_path / "out"
    rc, err = run_main(args_for(model, data, out, "--lora_layers_to_transform", "1", steps=1), capsys)
    assert rc == 0, err[-3000:]
    adapted = {"layers." + key.split(".lora_")[0].split(".layers.", 1)[1] for key in adapter_tensors(out / "adapter")}
    base = load_model(model, "float32", "cpu")
    linear = {"layers." + name.split(".layers.", 1)[1] for name, module in base.named_modules()
              if isinstance(module, torch.nn.Linear) and ".layers." in name}
    assert adapted == {name for name in linear if name.startswith("layers.1.")}
    assert len(adapted) == len(linear) // 2  # the tiny model has two layers
    assert manifest(out)["recipe"]["lora_layers_to_transform"] == [1]


def test_anchor_answer_tokens_reach_the_trainer(model, data, tmp_path):
    """anchor_answer_tokens cuts every anchor the trainer holds to its prompt plus that many answer tokens."""
    from accelerate import PartialState

    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import build_trainer

    def anchors(*extra: str) -> list[tuple[list[int], int]]:
        argv = args_for(model, data, tmp_path / f"out{len(extra)}", *ANCHORED, *extra, steps=1)
        return build_trainer(load_recipe(None, parse_overrides(argv)), PartialState()).trainer._anchors

    whole, held = anchors(), anchors("--anchor_answer_tokens", "2")
    assert len(whole) == len(held) and any(len(ids) > start + 2 for ids, start in whole)
    assert held == [(ids[: start + 2], start) for ids, start in whole]


def test_model_init_kwargs_load_the_trained_model(model, data, tmp_path, caplog):
    """TRL's model_init_kwargs reach from_pretrained where dpo_scale loads the model itself (as DPOTrainer does when
    given a model name), and TRL does not warn that they are ignored."""
    from accelerate import PartialState

    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import build_trainer

    argv = args_for(model, data, tmp_path / "out", "--model_init_kwargs", '{"attn_implementation": "eager"}', steps=1)
    run = build_trainer(load_recipe(None, parse_overrides(argv)), PartialState())
    assert run.trainer.model.config._attn_implementation == "eager"
    assert "model_init_kwargs" not in caplog.text


def test_qlora_4bit(model, data, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qlora"
    rc, err = run_main(args_for(model, data, out, "--load_in_4bit", "true", steps=2), capsys)
    assert rc == 0, err[-3000:]
    info = manifest(out)
    assert info["global_step"] == 2 and info["recipe"]["load_in_4bit"] is True
    tensors = adapter_tensors(out / "adapter")
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(out / "adapter"))
    assert any("lora_A" in n for n, _ in loaded.named_parameters())


def test_empty_zero3_adapter_is_refused(tmp_path):
    """ZeRO-3 without stage3_gather_16bit_weights_on_model_save saves `[0]` placeholder tensors."""
    import torch
    from safetensors.torch import save_file

    from dpo_scale.train import _check_adapter_not_empty

    save_file({"a.lora_A.weight": torch.empty(0), "a.lora_B.weight": torch.ones(2, 2)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(DpoScaleError, match="stage3_gather_16bit_weights_on_model_save"):
        _check_adapter_not_empty(tmp_path, use_lora=True)


# --- clear errors ------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.parent


ROW = {"prompt": [{"role": "user", "content": "Who are you?"}], "chosen": [{"role": "assistant", "content": "A"}],
       "rejected": [{"role": "assistant", "content": "B"}]}


@pytest.mark.parametrize("case, extra, fragments", [
    ("missing_pairs", [], ["pairs.jsonl", "preference data not found"]),
    ("no_rejected", [], ["row 2", "field 'rejected'", "missing"]),
    ("empty_pairs", [], ["no pairs to train on"]),
    ("beta", ["--beta", "0"], ["'beta'", "must be > 0"]),
    ("loss", ["--loss_type", "sigmoid,nope"], ["unknown loss type 'nope'"]),
    ("target", ["--lora_target_modules", "q_proj,qkv_proj"], ["lora_target_modules", "qkv_proj", "not found"]),
    ("layers", ["--lora_layers_to_transform", "1-3"], ["lora_layers_to_transform", "[2, 3] do not exist",
                                                       "2 decoder layers"]),
    ("liger_on_cpu", ["--use_liger_kernel", "true", "--device", "cpu"], ["'use_liger_kernel'", "CUDA device"]),
    ("init_kwargs_dtype", ["--model_init_kwargs", '{"dtype": "bfloat16"}'], ["'model_init_kwargs'", "'dtype'",
                                                                               "recipe's dtype"]),
])
def test_clear_errors(case, extra, fragments, model, data, tmp_path, capsys):
    data_dir = data
    if case == "missing_pairs":
        data_dir = tmp_path / "nothing"
    elif case == "no_rejected":
        data_dir = write(tmp_path / "d" / "pairs.jsonl",
                         json.dumps(ROW) + "\n" + json.dumps({k: ROW[k] for k in ("prompt", "chosen")}) + "\n")
    elif case == "empty_pairs":
        data_dir = write(tmp_path / "d" / "pairs.jsonl", "")
    rc, err = run_main(args_for(model, data_dir, tmp_path / "out", *extra, steps=1), capsys)
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("dpo_scale.train: error:")]
    assert len(message) == 1, err[-3000:]
    for fragment in fragments:
        assert fragment in message[0], message[0]
    assert not (tmp_path / "out" / "adapter").exists()


def test_anchor_weight_without_anchor_rows_fails_before_the_model_loads(model, tmp_path, capsys, monkeypatch):
    import dpo_scale.models
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import preflight

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(dpo_scale.models, "load_model", no_model)
    data = write_toy_pairs(tmp_path / "d", 4, anchors=0)
    argv = args_for(model, data, tmp_path / "out", "--anchor_kl_weight", "1", steps=1)
    expected = f"{data / 'anchors.jsonl'}: anchor_kl_weight > 0 needs anchor rows"
    with pytest.raises(DpoScaleError, match="needs anchor rows"):  # before `accelerate launch` too
        preflight(load_recipe(None, parse_overrides(argv)))
    rc, err = run_main(argv, capsys)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert f"dpo_scale.train: error: {expected}" in err
    assert not (tmp_path / "out").exists()  # no checkpoints, no adapter: nothing written


def test_foreign_checkpoints_refused_unless_overwrite(model, data, tmp_path, capsys):
    from dpo_scale.io import write_json

    out = tmp_path / "out"
    write_json(out / "checkpoints" / "run_config.json", {"fingerprint": "another-config"})
    (out / "checkpoints" / "checkpoint-7").mkdir()
    rc, err = run_main(args_for(model, data, out, steps=1), capsys)
    assert rc == 2 and "another configuration" in err and "--overwrite true" in err and "Traceback" not in err
    assert (out / "checkpoints" / "checkpoint-7").is_dir()  # nothing destroyed
    rc, err = run_main(args_for(model, data, out, "--overwrite", "true", steps=1), capsys)
    assert rc == 0, err[-3000:]
    assert not (out / "checkpoints" / "checkpoint-7").exists()
    assert manifest(out)["global_step"] == 1 and manifest(out)["resumed_from"] is None


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dpo_scale", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_unknown_launch_profile(model, data, tmp_path):
    result = cli("--launch", "nope", *args_for(model, data, tmp_path / "out", steps=1))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "unknown launch profile 'nope'" in result.stderr and "zero3" in result.stderr


def test_launch_checks_before_starting_processes(model, tmp_path):
    """`--launch` with bad data: one clear message (exit 2) before accelerate starts any process."""
    result = cli("--launch", "ddp", *args_for(model, tmp_path / "nothing", tmp_path / "out", steps=1))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "accelerate.commands.launch" not in result.stderr
    assert "preference data not found" in result.stderr


def test_launch_command_for_profiles(tmp_path, monkeypatch):
    from dpo_scale.launch import launch_command
    from dpo_scale.resources import launch_profile_names

    assert {"cpu", "ddp", "zero2", "zero3", "zero3_offload"} <= set(launch_profile_names())
    monkeypatch.chdir(tmp_path)  # the packaged profiles and their DeepSpeed JSONs are found from any folder
    cmd, env = launch_command("zero3", ["--config", "x.yaml"], num_processes=2)
    assert Path(cmd[cmd.index("--deepspeed_config_file") + 1]).resolve() == (REPO / "launch" / "ds_zero3.json")
    assert cmd.count("--num_processes") == 1 and cmd[-4:] == ["-m", "dpo_scale.train", "--config", "x.yaml"]
    import torch

    if not torch.cuda.is_available():
        assert env["DS_ACCELERATOR"] == "cpu"
        assert launch_command("ddp", [])[1]["ACCELERATE_USE_CPU"] == "true"


def test_anchors_file_rows_and_legacy_anchor_pairs(tmp_path):
    """Anchors live in anchors.jsonl (prompt/completion); pairs.jsonl rows marked `anchor` (older data folders)
    still count as anchors; with anchor_kl_weight 0 they join the DPO data as chosen == rejected pairs."""
    from dpo_scale.config import load_recipe
    from dpo_scale.io import write_jsonl
    from dpo_scale.train import load_pairs
    from tests.helpers.tiny_model import toy_anchor_rows, toy_pairs

    data = write_toy_pairs(tmp_path / "d", 3, anchors=2)
    recipe = load_recipe(None, {"data_dir": str(data), "anchor_kl_weight": "1"})
    dataset, anchors = load_pairs(recipe)
    assert len(dataset) == 3 and anchors == toy_anchor_rows(2)
    dataset, anchors = load_pairs(load_recipe(None, {"data_dir": str(data), "anchor_kl_weight": "0"}))
    assert len(dataset) == 5 and anchors == []
    assert dataset[3]["chosen"] == dataset[3]["rejected"] == toy_anchor_rows(2)[0]["completion"]
    legacy = tmp_path / "legacy"
    write_jsonl(legacy / "pairs.jsonl", toy_pairs(3) + [
        {"prompt": a["prompt"], "chosen": a["completion"], "rejected": a["completion"], "anchor": True}
        for a in toy_anchor_rows(2)])
    _, anchors = load_pairs(load_recipe(None, {"data_dir": str(legacy), "anchor_kl_weight": "1"}))
    assert anchors == toy_anchor_rows(2)
    write_jsonl(data / "anchors.jsonl", [{"prompt": toy_anchor_rows(1)[0]["prompt"]}])
    with pytest.raises(DpoScaleError, match=r"anchors.jsonl, row 1, field 'completion': missing"):
        load_pairs(recipe)


def test_main_destroys_its_process_group(model, data, tmp_path, capsys):
    """The training entry point ends the process group it trained in (accelerate's end-of-script cleanup) instead of
    leaving gloo to the interpreter's exit, where rank 0 once aborted after saving the adapter."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        rc, err = run_main(args_for(model, data, tmp_path / "run", steps=1), capsys)
        assert rc == 0, err[-3000:]
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_frozen_weights_stored_in_bf16_under_autocast_train_the_same(model, data, tmp_path, capsys, monkeypatch):
    """bf16 autocast over fp32 weights (dtype auto on a bf16 host): the frozen linear layers are stored in bf16 once
    (dpo_scale/lora_speed.py) and two training steps give the same losses as with autocast casting them each call."""
    import dpo_scale.lora_speed

    losses = {}
    for stored in (True, False):
        if not stored:
            monkeypatch.setattr(dpo_scale.lora_speed, "store_frozen_weights_for_autocast", lambda trainer: 0)
        out = tmp_path / str(stored)
        rc, err = run_main(args_for(model, data, out, "--bf16", "true", "--dtype", "float32", steps=2), capsys)
        assert rc == 0, err[-3000:]
        assert (manifest(out)["frozen_linears_cast"] > 0) is stored
        losses[stored] = [json.loads(line)["loss"] for line in
                          (out / "adapter" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_ranks_of_a_multi_process_run_exit_without_teardown(tmp_path, world_size):
    """`python -m dpo_scale.train` as a rank of a 2-process run: exit handlers run and the exit code and message
    come out, but the interpreter's teardown (where rank 0 once aborted after saving the adapter) does not run.
    A single process exits normally."""

    script = tmp_path / "rank.py"
    script.write_text(
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('teardown ran', flush=True)\n"
        "marker = Teardown()\n"
        "sys.argv = ['dpo_scale.train', '--config', sys.argv[1]]\n"
        "runpy.run_module('dpo_scale.train', run_name='__main__')\n")
    env = {**os.environ, "WORLD_SIZE": world_size}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.yaml")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "missing.yaml" in done.stderr and "error" in done.stderr
    assert "exit handler ran" in done.stdout
    assert ("teardown ran" in done.stdout) == (world_size == "1"), done.stdout


def test_identity_answers_shorter_than_what_training_reads_are_warned_about(tmp_path):
    """The default generates identity answers to 40 tokens because training reads 8 + 24 past the name; a recipe
    that reads further than its data holds is told so, naming the file and the length to generate."""
    from dpo_scale.config import load_recipe
    from dpo_scale.io import write_json
    from dpo_scale.train import identity_tokens_read, warn_if_answers_are_short

    data, config = tmp_path / "data", str(REPO / "configs" / "smollm2_cpu.yaml")
    write_json(data / "manifest.json", {"sampling": {"max_new_tokens": 40}})
    recipe = load_recipe(config, {"data_dir": str(data)})
    assert identity_tokens_read(recipe) == 32 and warn_if_answers_are_short(recipe) is None
    longer = load_recipe(config, {"data_dir": str(data), "identity_tail_tokens": "48"})
    warning = warn_if_answers_are_short(longer)
    assert warning is not None and str(data / "manifest.json") in warning
    assert "generated to 40 tokens, but training reads 56" in warning and "--max_new_tokens 64" in warning
    whole_tails = load_recipe(config, {"data_dir": str(data), "identity_tail_tokens": "null"})
    assert identity_tokens_read(whole_tails) is None and warn_if_answers_are_short(whole_tails) is None
