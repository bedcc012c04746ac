"""`dpo-scale run`: data -> train -> merge -> eval [-> export] -> report in one run folder.

Each stage's manifest holds its fingerprint (dpo_scale/manifests.py). A stage whose manifest matches the
current recipe and inputs is skipped; one that is missing runs (an interrupted stage resumes: generation
chunks and training checkpoints are kept). A finished stage whose fingerprint changed is refused, naming
the changed keys, unless `--overwrite true`: then it and every stage whose inputs it changes are redone
(docs/reruns.md). report.md is written from the manifests. Timings per stage go to timings.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from dpo_scale import manifests
from dpo_scale.config import Recipe
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import read_json, write_json

log = logging.getLogger(__name__)


def stale_stages(recipe: Recipe) -> dict[str, list[str]]:
    """Finished stages whose recipe keys or base model differ from the current recipe: stage -> changes.
    (Input files are compared when the stage's turn comes: an upstream stage may still rewrite them.)"""
    out = {}
    for stage in manifests.STAGES:
        manifest = manifests.read_manifest(stage, recipe)
        if manifest is None:
            continue
        new = manifests.fingerprint(stage, recipe)
        found = [c for c in manifests.changes(manifest.get("fingerprint"), new) if not c.startswith("input ")]
        if found:
            out[stage] = found
    return out


def refusal(recipe: Recipe, stale: dict[str, list[str]]) -> DpoScaleError:
    said = "; ".join(f"{stage}: {', '.join(found)}" for stage, found in stale.items())
    first = next(iter(stale))
    return DpoScaleError(f"{recipe.output_dir}: finished stages were made with other settings ({said}); "
                         f"rerun with those settings, use another output_dir, or --overwrite true to redo "
                         f"'{first}' and the stages after it")


def _stage(timings: dict, name: str, recipe: Recipe, fn: Callable[[], object]) -> None:
    manifest = manifests.read_manifest(name, recipe)
    if manifest is not None:
        found = manifests.changes(manifest.get("fingerprint"), manifests.fingerprint(name, recipe))
        if not found:
            log.info("stage %s: complete (%s), skipped", name, manifests.manifest_path(name, recipe))
            timings.setdefault(name, {"seconds": None, "skipped": True})
            return
        if not recipe.overwrite:
            raise refusal(recipe, {name: found})
        log.info("stage %s: redone (%s)", name, ", ".join(found))
        # A redo killed half-way must not leave the old manifest marking new, partial outputs complete.
        manifests.manifest_path(name, recipe).unlink()
    _run_timed(timings, name, fn)


def _run_timed(timings: dict, name: str, fn: Callable[[], object]) -> None:
    from dpo_scale.allocator import release_freed_memory

    log.info("stage %s: running", name)
    start = time.time()
    fn()
    release_freed_memory()  # the stages share this process: what one freed is not held through the next
    timings[name] = {"seconds": round(time.time() - start, 1), "skipped": False}


def _export(timings: dict, recipe: Recipe) -> None:
    """The GGUF export (export_format): redone whenever the merge ran, else kept when its file exists."""
    from dpo_scale.export_gguf import export, export_path

    if export_path(recipe).is_file() and timings.get("merge", {}).get("skipped"):
        log.info("stage export: complete (%s), skipped", export_path(recipe))
        timings.setdefault("export", {"seconds": None, "skipped": True})
        return
    _run_timed(timings, "export", lambda: export(recipe))


def run_pipeline(recipe: Recipe) -> Path:
    from dpo_scale.evaluate import evaluate_cli
    from dpo_scale.generation.runner import run_data_stage
    from dpo_scale.merge import merge
    from dpo_scale.model_card import write_model_cards
    from dpo_scale.report import write_report
    from dpo_scale.train import train

    out = Path(recipe.output_dir)
    stale = stale_stages(recipe)
    if stale and not recipe.overwrite:
        raise refusal(recipe, stale)  # before anything is touched
    out.mkdir(parents=True, exist_ok=True)
    timings_file = out / "timings.json"
    timings: dict = read_json(timings_file) if timings_file.is_file() else {}
    write_json(out / "recipe.json", recipe.to_dict())
    stages = {
        "data": lambda: run_data_stage(recipe),
        "train": lambda: train(recipe),
        "merge": lambda: merge(recipe),
        "eval": lambda: evaluate_cli(recipe, None, None, str(out / "eval.md")),
    }
    for name in manifests.STAGES:
        _stage(timings, name, recipe, stages[name])
        write_json(timings_file, timings)
    if recipe.export_format:
        _export(timings, recipe)
        write_json(timings_file, timings)
    write_model_cards(recipe)  # now with the evaluation table
    report = write_report(recipe, timings)
    log.info("report: %s", report)
    return report
