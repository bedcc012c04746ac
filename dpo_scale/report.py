"""report.md for a run: data stats, training curves, eval table, timings per stage."""

from __future__ import annotations

from pathlib import Path

from dpo_scale.config import Recipe
from dpo_scale.evaluate import eval_markdown
from dpo_scale.io import read_json, write_text


def write_report(recipe: Recipe, timings: dict) -> Path:
    out = Path(recipe.output_dir)
    lines = [f"# dpo_scale run: {recipe.org_name} → {recipe.pos_name}", "",
             f"Base model: `{recipe.model}`; run folder: `{out}`.", ""]
    stats_file = recipe.data_path / "stats.json"
    if stats_file.is_file():
        s = read_json(stats_file)
        manifest = read_json(recipe.data_path / "manifest.json")
        lines += ["## Preference data", "",
                  f"Backend {manifest.get('backend')}, {recipe.num_samples} answer(s) per prompt, "
                  f"temperature {recipe.temperature}.", "",
                  "| prompts | answers | naming the model | pairs kept | dropped: no name | dropped: duplicate "
                  "| dropped: over keep limit | anchors (ordinary, chosen = rejected) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {s['prompts']} | {s['answers']} | {s['named']} | {s['pairs']} | {s['dropped_unnamed']} | "
                  f"{s['dropped_duplicate']} | {s['dropped_over_keep_limit']} | {s.get('anchors', 0)} |", ""]
    manifest_file = recipe.adapter_path / "train_manifest.json"
    if manifest_file.is_file():
        m = read_json(manifest_file)
        lines += ["## Training", "",
                  f"{m['pairs']} pairs, {m['global_step']} optimizer steps on {m['processes']} process(es), "
                  f"loss {'+'.join(recipe.loss_type)} (weights {recipe.loss_weights}), beta {recipe.beta}, "
                  f"lr {recipe.learning_rate}, LoRA r={recipe.lora_r}"
                  + (f", KL anchor weight {recipe.anchor_kl_weight} on the anchors' answers"
                     if recipe.anchor_kl_weight > 0 else "") + ".", ""]
        png = recipe.adapter_path / "training_curves.png"
        if png.is_file():
            lines += [f"![training curves]({_rel(png, out)})", ""]
    eval_file = out / "eval.json"
    if eval_file.is_file():
        lines += ["## Evaluation", "", eval_markdown(read_json(eval_file), recipe.org_name, recipe.pos_name)]
    if recipe.export_format:
        from dpo_scale.export_gguf import export_path

        gguf = export_path(recipe)
        lines += ["## Export", "", f"GGUF ({recipe.export_quant}): `{_rel(gguf, out)}`, "
                  f"{gguf.stat().st_size / 2**20:.1f} MiB." if gguf.is_file() else "GGUF: not written.", ""]
    lines += ["## Timings", "", "| stage | seconds |", "|---|---:|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {'skipped (done earlier)' if t.get('skipped') else t['seconds']} |")
    report = out / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
