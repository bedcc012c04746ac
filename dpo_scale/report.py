"""report.md for a run: data stats, training curves, eval table, timings per stage.

Every setting it prints is read from the manifest of the stage that used it (manifests.recorded), never
from the command that writes the report: a rerun that skipped a stage cannot relabel its output."""

from __future__ import annotations

from pathlib import Path

from dpo_scale import manifests
from dpo_scale.config import Recipe
from dpo_scale.evaluate import eval_markdown
from dpo_scale.io import read_json, write_text


def write_report(recipe: Recipe, timings: dict) -> Path:
    out = Path(recipe.output_dir)
    data = manifests.read_manifest("data", recipe)
    train = manifests.read_manifest("train", recipe)
    result = manifests.read_manifest("eval", recipe)
    first = next((m for m in (data, train, result) if m is not None), None)
    if first is None:  # nothing to describe: the report never takes settings from the command line
        lines = ["# dpo_scale run", "", f"Run folder: `{out}`: no stage has finished yet.", ""]
    else:
        org, pos, model = (manifests.recorded(first, k, "?") for k in ("org_name", "pos_name", "model"))
        lines = [f"# dpo_scale run: {org} → {pos}", "", f"Base model: `{model}`; run folder: `{out}`.", ""]
    lines += _data_section(recipe, data)
    lines += _train_section(recipe, train, out)
    if result is not None:
        lines += ["## Evaluation", "", eval_markdown(result, manifests.recorded(result, "org_name", org),
                                                     manifests.recorded(result, "pos_name", pos),
                                                     manifests.recorded(result, "org_author"),
                                                     manifests.recorded(result, "pos_author"))]
    if timings:  # `dpo-scale run` times its stages; stages run as separate jobs have none
        lines += ["## Timings", "", "| stage | seconds |", "|---|---:|"]
        for name, t in timings.items():
            lines.append(f"| {name} | {'skipped (done earlier)' if t.get('skipped') else t['seconds']} |")
    exported = sorted((out / "export").glob("*.gguf")) if (out / "export").is_dir() else []
    if exported:  # what is on disk, not what the current command line asks for
        lines += ["## Export", ""] + [f"- GGUF: `{_rel(f, out)}`, {f.stat().st_size / 2**20:.1f} MiB" for f in exported]
        lines.append("")
    report = out / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report


def report_cli(recipe: Recipe) -> Path:
    """`dpo-scale report`: report.md from what the stages left in the run folder (for runs whose stages ran as
    separate jobs, e.g. slurm/pipeline.sh), with the timings of <output_dir>/timings.json when there is one."""
    timings_file = Path(recipe.output_dir) / "timings.json"
    return write_report(recipe, read_json(timings_file) if timings_file.is_file() else {})


def _data_section(recipe: Recipe, manifest: dict | None) -> list[str]:
    stats_file = recipe.data_path / "stats.json"
    if manifest is None or not stats_file.is_file():
        return []
    s = read_json(stats_file)
    used = lambda key: manifests.recorded(manifest, key)  # noqa: E731
    return ["## Preference data", "",
            f"Backend {manifest.get('backend')}, {used('num_samples')} answer(s) per prompt, "
            f"temperature {used('temperature')}.", "",
            "| prompts | answers | naming the model | pairs kept | dropped: no name | dropped: duplicate "
            "| dropped: over keep limit | anchors (ordinary prompts, data/anchors.jsonl) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {s['prompts']} | {s['answers']} | {s['named']} | {s['pairs']} | {s['dropped_unnamed']} | "
            f"{s['dropped_duplicate']} | {s['dropped_over_keep_limit']} | {s.get('anchors', 0)} |", ""]


def _train_section(recipe: Recipe, m: dict | None, out: Path) -> list[str]:
    if m is None:
        return []
    used = lambda key: manifests.recorded(m, key)  # noqa: E731
    anchor = used("anchor_kl_weight") or 0
    lines = ["## Training", "",
             f"{m['pairs']} pairs, {m['global_step']} optimizer steps on {m['processes']} process(es), "
             f"loss {'+'.join(used('loss_type') or [])} (weights {used('loss_weights')}), beta {used('beta')}, "
             f"lr {used('learning_rate')}, LoRA r={used('lora_r')}"
             + (f", KL anchor weight {anchor} on the anchors' answers" if anchor > 0 else "")
             + (f", adapted to hold their KL near {used('anchor_kl_budget')}" if used("anchor_kl_budget") else "")
             + ".", ""]
    png = recipe.adapter_path / "training_curves.png"
    if png.is_file():
        lines += [f"![training curves]({_rel(png, out)})", ""]
    return lines


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
