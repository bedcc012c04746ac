"""`dpo-scale generate|train|merge|eval|export|run`: parse, then call the stage. Every recipe key can be
overridden as `--key value`, the same way in every stage."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from dpo_scale.errors import DpoScaleError

STAGES = ("generate", "train", "merge", "eval", "export", "run")


def _parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"dpo-scale {stage}", add_help=True,
                                epilog="Any recipe key can be given as --key value (see dpo_scale/config.py).")
    p.add_argument("--config", help="recipe YAML (configs/*.yaml)")
    if stage == "train":
        p.add_argument("--launch", help="accelerate profile under launch/ (cpu, ddp, zero2, zero3, ...): "
                       "re-runs this command under `accelerate launch`")
        p.add_argument("--num_processes", type=int, help="processes for --launch (default: the profile's)")
    if stage == "merge":
        p.add_argument("--adapter", help="adapter folder (default: the recipe's adapter_dir)")
        p.add_argument("--base", help="base model (default: the recipe's model)")
        p.add_argument("--out", help="output folder (default: the recipe's merged_dir)")
    if stage == "eval":
        p.add_argument("--model", dest="eval_model", help="model to evaluate (default: the run's merged model)")
        p.add_argument("--adapter", help="evaluate base + this adapter instead of a merged model")
        p.add_argument("--base", help="the model to compare against (default: the recipe's model)")
        p.add_argument("--questions", help="identity questions file (default: the held-out split)")
        p.add_argument("--report", help="write the table here (default: <output_dir>/eval.md)")
    if stage == "export":
        p.add_argument("--format", dest="export_format", default="gguf", help="gguf (default)")
        p.add_argument("--quant", dest="export_quant", help="f16 or q8_0 (default: the recipe's export_quant)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        print(f"usage: dpo-scale {{{','.join(STAGES)}}} [--config RECIPE.yaml] [--key value ...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    stage, rest = argv[0], argv[1:]
    from dpo_scale.model_card import COMMAND_ENV

    before = os.environ.get(COMMAND_ENV)
    os.environ.setdefault(COMMAND_ENV, shlex.join(["dpo-scale", *argv]))  # the model cards quote it
    try:
        return run_stage(stage, rest)
    except DpoScaleError as e:
        print(f"dpo-scale {stage}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if before is None:
            os.environ.pop(COMMAND_ENV, None)


def run_stage(stage: str, rest: list[str]) -> int:
    from dpo_scale.config import load_recipe, parse_overrides

    args, unknown = _parser(stage).parse_known_args(rest)
    overrides = parse_overrides(unknown)
    if stage == "merge":
        overrides.update({k: v for k, v in (("adapter_dir", args.adapter), ("model", args.base),
                                            ("merged_dir", args.out)) if v})
    if stage == "eval":
        overrides.update({k: v for k, v in (("model", args.base), ("eval_questions", args.questions)) if v})
    if stage == "export":
        overrides.update({k: v for k, v in (("export_format", args.export_format),
                                            ("export_quant", args.export_quant)) if v})
    recipe = load_recipe(args.config, overrides)

    if stage == "generate":
        from dpo_scale.generation.runner import run_data_stage

        run_data_stage(recipe)
    elif stage == "train":
        if args.launch:
            from dpo_scale.launch import launch_training

            return launch_training(args.launch, rest, recipe, args.num_processes)
        from dpo_scale.train import train

        train(recipe)
    elif stage == "merge":
        from dpo_scale.merge import merge

        merge(recipe)
    elif stage == "eval":
        from dpo_scale.evaluate import evaluate_cli

        evaluate_cli(recipe, args.eval_model, args.adapter, args.report)
    elif stage == "export":
        from dpo_scale.export_gguf import export

        export(recipe)
    elif stage == "run":
        from dpo_scale.pipeline import run_pipeline

        run_pipeline(recipe)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
