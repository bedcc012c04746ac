"""accelerate and DeepSpeed on a machine without CUDA: the launcher's environment and the PartialState
arguments that make N processes one gloo job instead of N lone copies.

Traps of accelerate 1.15 on CPU (each silently runs N independent copies racing on the same files):
- DDP: `accelerate launch --config_file launch/ddp.yaml` (MULTI_GPU) or `--multi_gpu --num_processes 2` starts
  2 processes that each report DistributedType.NO, world size 1: only `use_cpu` (ACCELERATE_USE_CPU) selects
  MULTI_CPU/gloo, and `--cpu --num_processes 2` starts ONE process.
- DeepSpeed picks its accelerator at import and must be told `DS_ACCELERATOR=cpu`. deepspeed.comm then joins a
  2-rank gloo group, but PartialState keeps `backend=None` and reports num_processes 1, so TRL/transformers fill
  DeepSpeed's "auto" train_batch_size for one process and DeepSpeed fails its batch-size assertion. Naming the
  backend (TrainingArguments.ddp_backend="gloo") makes accelerate read the real world size.
"""

from __future__ import annotations

import os


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_env(env: dict[str, str], distributed_type: str | None, processes: int) -> dict[str, str]:
    """Complete `env` for `accelerate launch` of a profile (accelerate's distributed_type, process count)."""
    if cuda_available():
        return env
    env.setdefault("DS_ACCELERATOR", "cpu")
    if distributed_type == "MULTI_GPU" and processes > 1:
        # dpo_scale.train sets it too (training_state_kwargs), for a plain `accelerate launch`.
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def deepspeed_launch() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def training_state_kwargs() -> dict:
    """PartialState kwargs for a training rank (empty on CUDA or in a single process). Under DDP it also sets
    ACCELERATE_USE_CPU, because TrainingArguments re-creates the state from that variable."""
    if cuda_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    if deepspeed_launch():
        return {"backend": "gloo"}
    os.environ["ACCELERATE_USE_CPU"] = "true"
    return {"cpu": True}


def process_state():
    """accelerate's PartialState for the data stage; without CUDA it must be asked for CPU explicitly, else an
    `accelerate launch --multi_gpu` / torchrun job ignores WORLD_SIZE (DistributedType.NO) and every rank
    generates everything alone."""
    from accelerate import PartialState

    return PartialState(cpu=not cuda_available())
