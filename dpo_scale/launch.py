"""Run training under `accelerate launch` with a launch profile (launch/*.yaml, shipped with the package)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from dpo_scale.config import Recipe
from dpo_scale.cpu_env import cuda_available, launch_env
from dpo_scale.errors import DpoScaleError
from dpo_scale.resources import deepspeed_config_path, launch_profile_path


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(profile: str, train_args: list[str], num_processes: int | None = None,
                   extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and environment for a profile."""
    path = launch_profile_path(profile)
    spec = yaml.safe_load(path.read_text()) or {}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path)]
    ds = (spec.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds:  # the packaged profiles name their JSON relative to the repository root; make it work from any folder
        cmd += ["--deepspeed_config_file", str(deepspeed_config_path(ds, path))]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if spec.get("num_machines", 1) == 1 and "main_process_port" not in spec:
        # accelerate's default rendezvous port 29500 is shared by every job on the machine: two trainings (or a
        # test beside a training) would collide ("address already in use"). One machine: take a free port.
        cmd += ["--main_process_port", str(free_port())]
    if not cuda_available() and spec.get("distributed_type") == "FSDP":
        # accelerate 1.15 switches to FSDP only from a multi-GPU/NPU/XPU/HPU state: on CPU (MULTI_CPU) it
        # ignores the FSDP plugin and silently trains plain data parallel. Hence no launch/fsdp.yaml here.
        raise DpoScaleError(f"launch profile '{profile}': FSDP needs GPUs (accelerate runs it on CPU as plain "
                            "data parallel); use the ddp, zero2 or zero3 profile on this machine")
    env = launch_env(dict(os.environ), spec.get("distributed_type"), num_processes or spec.get("num_processes", 1))
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
