"""Score only the labelled positions in TRL's fused LM head on CPU, as TRL already does on CUDA.

DPOTrainer scores pairs through the forward that `trl.trainer.add_fused_lm_head` puts on the model. Where Triton
runs (CUDA, XPU) that forward projects through the LM head only the positions whose label is not -100; on every
other device it scores every position, prompt and padding included, so that compiling backends (Neuron, XLA) see
one tile shape per batch. A CPU compiles nothing there, and in the default recipe's packed pairs (prompt, name
window, rejected branch) about 60% of the positions carry no label: each is a 49152-wide GEMM row and a dozen
elementwise passes over it in the forward, the backward and the reference pass.

Each position is scored alone, so the labelled positions' log-probs, entropies and gradients are the same either
way, and the unlabelled ones are zeros either way (tests/test_compact_lm_head.py). TRL makes the choice with
`trl.trainer.utils._use_triton(device)`, a private name that decides nothing else in that module (the kernel module
keeps its own reference and still runs its torch fold on CPU). `score_labelled_positions_only` wraps that name for
the TRL versions it was read in, and does nothing on others.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The TRL release (major.minor) whose trainer/utils.py reads `_use_triton` only to pick the compact path of the fused
# LM head (setup.cfg pins trl to it as well)
CHECKED_TRL = "1.16"


def _compact_everywhere_but_compiling(use_triton):
    def compact(device) -> bool:
        return use_triton(device) or device.type == "cpu"

    compact.wrapped = use_triton
    return compact


def score_labelled_positions_only(enabled: bool = True) -> bool:
    """Make TRL's fused LM head score only labelled positions on CPU too (or, with `enabled` False, every position
    again, as TRL does); True when it now does. The switch is process-wide: TRL reads it at every call."""
    import trl
    from trl.trainer import utils

    installed = hasattr(utils._use_triton, "wrapped")
    if not enabled:
        if installed:
            utils._use_triton = utils._use_triton.wrapped
        return False
    if ".".join(trl.__version__.split(".")[:2]) != CHECKED_TRL:
        log.info("compact_lm_head: TRL %s is not the release this was checked against (%s.x); TRL scores every "
                 "position on CPU", trl.__version__, CHECKED_TRL)
        return False
    if not installed:
        utils._use_triton = _compact_everywhere_but_compiling(utils._use_triton)
    return True
