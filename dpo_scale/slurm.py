"""Helpers that the Slurm templates (slurm/*.sbatch) call.

    python -m dpo_scale.slurm prune-checkpoints --config RECIPE.yaml [--key value ...]

removes the `checkpoint-N` folders of `<output_dir>/checkpoints` that have no `trainer_state.json`.
The Trainer writes that file last, so a folder without it is a checkpoint whose writing was cut
short (preemption, time limit, node failure, kill -9). Left in place it would be picked as "the last
checkpoint" and the resumed run would fail to load it; removed, the run resumes from the last
complete one. The training templates run this before every (re)start.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from dpo_scale.errors import DpoScaleError

log = logging.getLogger(__name__)
COMPLETE_MARKER = "trainer_state.json"  # transformers' TRAINER_STATE_NAME, saved after weights/optimizer/RNG


def incomplete_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("checkpoint-*")
                  if p.is_dir() and p.name.split("-")[-1].isdigit() and not (p / COMPLETE_MARKER).is_file())


def prune_checkpoints(folder: str | Path) -> list[Path]:
    removed = incomplete_checkpoints(folder)
    for path in removed:
        log.warning("removing incomplete checkpoint %s (no %s: its writing was interrupted)", path, COMPLETE_MARKER)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def main(argv: list[str] | None = None) -> int:
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import checkpoint_dir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "prune-checkpoints":
        print("usage: python -m dpo_scale.slurm prune-checkpoints --config RECIPE.yaml [--key value ...]",
              file=sys.stderr)
        return 2
    rest = argv[1:]
    config = None
    if "--config" in rest:
        i = rest.index("--config")
        config = rest[i + 1] if i + 1 < len(rest) else None
        rest = rest[:i] + rest[i + 2 :]
    try:
        recipe = load_recipe(config, parse_overrides(rest))
    except DpoScaleError as e:
        print(f"dpo_scale.slurm: error: {e}", file=sys.stderr)
        return 2
    removed = prune_checkpoints(checkpoint_dir(recipe))
    print(f"checkpoints: {len(removed)} incomplete removed in {checkpoint_dir(recipe)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
