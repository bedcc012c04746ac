"""Find accelerate launch profiles (launch/*.yaml) and run training under `accelerate launch`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

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


def launch_command(profile: str, train_args: list[str], num_processes: int | None = None,
                   extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and environment for a profile."""
    path = profile_path(profile)
    spec = yaml.safe_load(path.read_text())
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path)]
    env = dict(os.environ)
    ds = (spec.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds:  # profiles name their JSON relative to the repo root; make it work from any folder
        ds_path = Path(ds) if Path(ds).is_absolute() else LAUNCH_DIR.parent / ds
        cmd += ["--deepspeed_config_file", str(ds_path)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    import torch

    if not torch.cuda.is_available():
        # DeepSpeed picks its accelerator at import; on CPU machines it must be told.
        env.setdefault("DS_ACCELERATOR", "cpu")
        if spec.get("distributed_type") == "DEEPSPEED":
            # Without --multi_gpu-like hints accelerate falls back to ONE process on CPU.
            cmd += ["--num_processes", str(num_processes or spec.get("num_processes", 1))]
    cmd += extra or []
    cmd += ["-m", "dpo_scale.train", *train_args]
    return cmd, env


def launch_training(profile: str, rest: list[str], num_processes: int | None = None) -> int:
    args = _strip(rest, ("--launch", "--num_processes"))
    cmd, env = launch_command(profile, args, num_processes)
    print("+", " ".join(cmd), file=sys.stderr)
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
