"""Run TRL's fused LM head only on the positions that have a label, on CPU too.

TRL 1.16's fused-LM-head forward (`trl.trainer.utils.add_fused_lm_head`, what DPOTrainer's policy and reference
passes call) projects through the LM head only the positions whose label is not -100 when
`trl.trainer.utils._use_triton(device)` holds (CUDA or XPU with Triton), and every position elsewhere: on
XLA/Neuron a data-dependent row count would recompile the graph. A CPU runs eagerly and recompiles nothing, yet
gets the full projection. In the default recipe's DPO rows (prompt + answer cut to the name window, packed by
prefix sharing) about two positions in three are prompt; SmolLM2's head (49152 x 576) is about a fifth of a
position's forward FLOPs, and its backward runs on them too.

`compact_lm_head_on_cpu()` makes that one decision true for CPU tensors as well. The head's kernel
(`trl.kernels.ChunkedLogProbFunction`, which reads its own module's `_use_triton` to pick Triton or torch tiles) is
untouched, so CPU still runs torch tiles, on fewer rows. The per-token outputs are the same (zero where no label):
tests/test_compact_lm_head.py checks them and the gradients against the full projection.

Private name: `_use_triton` in `trl.trainer.utils`. TRL has no public switch for this (setup.cfg pins trl < 1.17);
listed in docs/private_api.md.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_MARK = "_dpo_scale_compacts_cpu"


def compact_lm_head_on_cpu() -> bool:
    """Have TRL's fused LM head score only labelled positions on CPU; True when it now does (idempotent), False
    when this TRL has no such decision to make (the forward is then left as TRL ships it)."""
    import trl.trainer.utils as trl_utils

    decides = getattr(trl_utils, "_use_triton", None)
    if decides is None or not callable(decides):
        log.warning("compact LM head: trl %s has no trl.trainer.utils._use_triton; the fused LM head scores every "
                    "position on CPU", _trl_version())
        return False
    if getattr(decides, _MARK, False):
        return True

    def compact_on(device) -> bool:
        return device.type == "cpu" or decides(device)

    setattr(compact_on, _MARK, True)
    trl_utils._use_triton = compact_on
    return True


def _trl_version() -> str:
    import trl

    return trl.__version__
