"""`dtype: auto`: the precision each stage runs in, chosen from what the host computes fast.

- Generation (data stage): bf16 weights where the host has fast bf16 matmuls, else fp32.
- Training: fp32 weights (the LoRA update and the optimizer stay fp32) with bf16 autocast on such hosts.
- Merge and evaluation: fp32. A merged model rounded to bf16 differs from the base by rounding noise of the
  size of the edit itself, and the evaluation would count that noise as drift.

Fast bf16: a CUDA GPU that reports bf16 support, or a CPU with AMX (amx_bf16) or AVX512-BF16 (avx512_bf16).
On an AVX2-only CPU bf16 is emulated and slower than fp32. An explicit `dtype` (and an explicit `bf16`)
always wins. The choice and its reason go to the log and to each stage's manifest.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    dtype: str  # weights as loaded: float32, bfloat16, float16
    autocast_bf16: bool  # training only: bf16 autocast over fp32 weights
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@cache
def cpu_info() -> dict:
    """The CPU's model name and the flags that decide its fast precisions (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {"cpu": model, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def on_gpu(device: str) -> bool:
    """Whether `device` ("cpu", "cuda", "cuda:1", "auto") runs on a GPU: anything but "cpu" where CUDA is there."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


def fast_bf16(device: str) -> tuple[bool, str]:
    """Whether `device` ("cpu", "cuda", "cuda:1", "auto") computes bf16 matmuls faster than fp32, and why."""
    import torch

    if on_gpu(device):
        if torch.cuda.is_bf16_supported():
            return True, f"GPU {torch.cuda.get_device_name()} supports bf16"
        return False, f"GPU {torch.cuda.get_device_name()} has no bf16"
    info = cpu_info()
    have = [flag for flag in BF16_CPU_FLAGS if info["flags"][flag]]
    if have:
        return True, f"CPU {info['cpu']} has {' and '.join(have)}"
    return False, f"CPU {info['cpu']} has neither amx_bf16 nor avx512_bf16 (bf16 is emulated, slower than fp32)"


def _pick(stage: str, dtype: str, device: str, bf16: bool | None) -> Precision:
    if dtype != "auto":  # bf16 autocast also over bf16 weights: the LoRA adapters stay fp32
        autocast = bool(bf16) if stage == "train" else False
        return Precision(dtype, autocast, f"dtype: {dtype} set in the recipe")
    fast, why = fast_bf16(device)
    if stage == "generate":
        return Precision("bfloat16" if fast else "float32", False, f"dtype auto: {why}")
    if stage == "train":
        autocast = fast if bf16 is None else bf16
        explicit = "" if bf16 is None else f"; bf16: {str(bf16).lower()} set in the recipe"
        return Precision("float32", autocast, f"dtype auto: {why}{explicit}")
    return Precision("float32", False, f"dtype auto: {stage} stays fp32 (bf16 rounding of the merged weights "
                                       "would be measured as drift)")


def stage_precision(recipe, stage: str, quiet: bool = False) -> Precision:
    """The precision of `stage` ("generate", "train", "merge", "eval") for this recipe, logged unless quiet."""
    dtype = (recipe.gen_dtype or recipe.dtype) if stage == "generate" else recipe.dtype
    choice = _pick(stage, dtype, recipe.device, recipe.bf16)
    if not quiet:
        log.info("%s precision: weights %s%s (%s)", stage, choice.dtype,
                 ", bf16 autocast" if choice.autocast_bf16 else "", choice.reason)
    return choice
