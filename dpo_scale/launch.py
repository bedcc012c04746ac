"""Find accelerate launch profiles (launch/*.yaml) and run training under `accelerate launch`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from dpo_scale.config import Recipe
from dpo_scale.errors import DpoScaleError

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"


def profiles() -> list[str]:
    return sorted(p.stem for p in LAUNCH_DIR.glob("*.yaml"))


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    path = LAUNCH_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise DpoScaleError(f"unknown launch profile '{profile}' (known: {', '.join(profiles())}, or a .yaml path)")
    return path


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(profile: str, train_args: list[str], num_processes: int | None = None,
                   extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and environment for a profile."""
    path = profile_path(profile)
    spec = yaml.safe_load(path.read_text()) or {}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path)]
    env = dict(os.environ)
    ds = (spec.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds:  # profiles name their JSON relative to the repo root; make it work from any folder
        ds_path = Path(ds) if Path(ds).is_absolute() else LAUNCH_DIR.parent / ds
        cmd += ["--deepspeed_config_file", str(ds_path)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if spec.get("num_machines", 1) == 1 and "main_process_port" not in spec:
        # accelerate's default rendezvous port 29500 is shared by every job on the machine: two trainings (or a
        # test beside a training) would collide ("address already in use"). One machine: take a free port.
        cmd += ["--main_process_port", str(free_port())]
    import torch

    if not torch.cuda.is_available():
        if spec.get("distributed_type") == "FSDP":
            # accelerate 1.15 switches to FSDP only from a multi-GPU/NPU/XPU/HPU state: on CPU (MULTI_CPU) it
            # ignores the FSDP plugin and silently trains plain data parallel. Hence no launch/fsdp.yaml here.
            raise DpoScaleError(f"launch profile '{profile}': FSDP needs GPUs (accelerate runs it on CPU as plain "
                                "data parallel); use the ddp, zero2 or zero3 profile on this machine")
        # DeepSpeed picks its accelerator at import; on CPU machines it must be told.
        env.setdefault("DS_ACCELERATOR", "cpu")
        processes = num_processes or spec.get("num_processes", 1)
        if spec.get("distributed_type") == "MULTI_GPU" and processes > 1:
            # accelerate 1.15 on a CUDA-less machine: a MULTI_GPU profile starts N processes that each run alone
            # (DistributedType.NO) unless ACCELERATE_USE_CPU selects gloo (MULTI_CPU); `--cpu` would start ONE.
            # dpo_scale.train sets it too, for a plain `accelerate launch`.
            env["ACCELERATE_USE_CPU"] = "true"
    cmd += extra or []
    cmd += ["-m", "dpo_scale.train", *train_args]
    return cmd, env


def launch_training(profile: str, rest: list[str], recipe: Recipe, num_processes: int | None = None) -> int:
    """`dpo-scale train --launch PROFILE ...`: check what can be checked here, then run under accelerate."""
    from dpo_scale.train import preflight

    args = _strip(rest, ("--launch", "--num_processes"))
    cmd, env = launch_command(profile, args, num_processes)  # an unknown or unusable profile fails first
    # One clear error (exit 2) for bad data, a foreign output folder or a missing LoRA target, instead of one
    # traceback per process from torch's elastic launcher.
    preflight(recipe)
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)


def _strip(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in keys:
            skip = i + 1 < len(argv)
            continue
        if any(arg.startswith(k + "=") for k in keys):
            continue
        out.append(arg)
    return out
