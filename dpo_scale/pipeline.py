"""`dpo-scale run`: data -> train -> merge -> eval [-> export] -> report in one run folder.

Each stage is skipped when its completion marker exists (data/manifest.json,
adapter/train_manifest.json, merged/merge_manifest.json, eval.json); an interrupted stage resumes
(generation chunks and training checkpoints are kept). Timings per stage go to timings.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dpo_scale.config import Recipe
from dpo_scale.io import read_json, write_json

log = logging.getLogger(__name__)


def _timed(timings: dict, name: str, marker: Path, fn) -> None:
    if marker.is_file():
        log.info("stage %s: complete (%s), skipped", name, marker)
        timings.setdefault(name, {"seconds": None, "skipped": True})
        return
    log.info("stage %s: running", name)
    start = time.time()
    fn()
    timings[name] = {"seconds": round(time.time() - start, 1), "skipped": False}


def run_pipeline(recipe: Recipe) -> Path:
    from dpo_scale.evaluate import evaluate_cli
    from dpo_scale.generation.runner import run_data_stage
    from dpo_scale.merge import merge
    from dpo_scale.model_card import write_model_cards
    from dpo_scale.report import write_report
    from dpo_scale.train import train

    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings_file = out / "timings.json"
    timings: dict = read_json(timings_file) if timings_file.is_file() else {}
    write_json(out / "recipe.json", recipe.to_dict())
    stages = (
        ("data", recipe.data_path / "manifest.json", lambda: run_data_stage(recipe)),
        ("train", recipe.adapter_path / "train_manifest.json", lambda: train(recipe)),
        ("merge", recipe.merged_path / "merge_manifest.json", lambda: merge(recipe)),
        ("eval", out / "eval.json", lambda: evaluate_cli(recipe, None, None, str(out / "eval.md"))),
    )
    if recipe.export_format:
        from dpo_scale.export_gguf import export, export_path

        stages += (("export", export_path(recipe), lambda: export(recipe)),)
    for name, marker, fn in stages:
        _timed(timings, name, marker, fn)
        write_json(timings_file, timings)
    write_model_cards(recipe)  # now with the evaluation table
    report = write_report(recipe, timings)
    log.info("report: %s", report)
    return report
