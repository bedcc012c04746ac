"""glibc malloc settings that keep freed tensor memory in the process on CPU.

glibc's defaults serve every allocation above a dynamic threshold (128 KiB, rising to at most 32 MiB) with a fresh
`mmap` and return it to the kernel on free, and trim the heap's free top above 128 KiB. A CPU training step allocates
and frees the same activations every step, so each step page-faults them in again (zeroed by the kernel). With the
threshold and the trim threshold at 1 GiB, freed memory stays in the heap and is reused.

Measured on the 2-core AVX512-BF16 EPYC (SmolLM2, the default recipe, 24 training steps; docs/experiments.md,
benchmarks/RESULTS.md): 12-15 M minor page faults per run against 0.9-1.2 M, and 94-100 s of training against 84-87 s;
the data stage (vLLM) 156 against 147 s, the evaluation 196 against 191 s. Peak memory grew by up to 5%.

This is what PyTorch's CPU launcher (`torch.backends.xeon.run_cpu`) gets from preloading jemalloc or tcmalloc,
without a library to install. It is applied to this process (`mallopt`) and, through glibc's `MALLOC_*_`
environment variables, to the processes it starts (accelerate ranks, vLLM's engine). It is skipped where the
process does not use glibc's malloc (another C library, or a malloc preloaded with LD_PRELOAD), where the user set
any of these variables, and with `DPO_SCALE_MALLOC=system`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

OPT_OUT = "DPO_SCALE_MALLOC"  # "system": leave the C library's malloc settings alone
KEEP_BYTES = 1 << 30
# mallopt's parameter numbers (malloc.h) and the environment variables glibc reads at a process's start
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
ENV = {"MALLOC_MMAP_THRESHOLD_": str(KEEP_BYTES), "MALLOC_TRIM_THRESHOLD_": str(KEEP_BYTES)}
PRELOADED_MALLOCS = ("jemalloc", "tcmalloc", "mimalloc")


def skip_reason(environ: dict[str, str] | None = None) -> str | None:
    """Why the settings are not applied here, or None when they are to be."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").lower() == "system":
        return f"{OPT_OUT}=system"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in PRELOADED_MALLOCS):
        return f"LD_PRELOAD has another malloc ({preload})"
    user_set = sorted(name for name in environ if name.startswith("MALLOC_") and name not in ENV)
    user_set += [name for name, value in ENV.items() if environ.get(name, value) != value]
    if user_set:
        return f"{', '.join(user_set)} set by the user"
    return None


def _in_environment() -> bool:
    """The settings are in this process's environment: set by `keep_freed_memory` here or in a parent."""
    return all(os.environ.get(name) == value for name, value in ENV.items())


def keep_freed_memory() -> bool:
    """Apply the settings to this process and to the processes it starts; True when they are in effect."""
    reason = skip_reason()
    if reason:
        log.debug("malloc settings left alone: %s", reason)
        return False
    inherited = _in_environment()  # a parent dpo-scale set them
    libc = ctypes.CDLL(None)
    if not all(libc.mallopt(option, KEEP_BYTES) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD)):
        log.warning("malloc: glibc refused mallopt; its defaults stay")
        return False
    os.environ.update(ENV)
    if not inherited:
        log.info("malloc: freed tensors up to %d MiB stay in the heap (%s=system to opt out)", KEEP_BYTES >> 20,
                 OPT_OUT)
    return True


def describe() -> str:
    """For manifests: what this process's malloc does."""
    reason = skip_reason()
    if reason:
        return f"left alone: {reason}"
    if _in_environment():
        return f"glibc, freed memory kept in the heap (mmap and trim thresholds {KEEP_BYTES >> 20} MiB)"
    return "glibc defaults"


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel (glibc's `malloc_trim`): between the stages of one process,
    which otherwise keeps what the last stage freed (the trim threshold above). No-op where the settings are off."""
    import gc

    gc.collect()
    if skip_reason() is None:
        ctypes.CDLL(None).malloc_trim(0)
