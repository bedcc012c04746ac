"""`dpo-scale generate|train|merge|eval|export|report|run`: parse, then call the stage. Every recipe key
(dpo_scale/config.py) and every TRL DPOConfig field can be given as `--key value`, the same way in every stage;
`--help` lists them, `--print_config` prints the resolved configuration and exits."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from dpo_scale.errors import DpoScaleError

STAGES = ("generate", "train", "merge", "eval", "export", "report", "run")


TRAINING_STAGES = ("train", "run")


def _parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"dpo-scale {stage}", add_help=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-h", "--help", action="store_true", help="list every key with its help text and exit")
    p.add_argument("--config", help="recipe YAML, or the name of a recipe shipped with the package (smollm2_cpu, ...)")
    p.add_argument("--print_config", action="store_true",
                   help="print the resolved configuration (and, for train and run, the DPOConfig training builds) "
                   "and exit")
    if stage == "train":
        p.add_argument("--launch", help="accelerate launch profile shipped with the package (cpu, ddp, zero2, "
                       "zero3, ...) or a .yaml path: re-runs this command under `accelerate launch`")
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


def _help(stage: str) -> str:
    """The stage's options, then every recipe key and (train, run) every other DPOConfig key, with help text."""
    import dataclasses

    from dpo_scale.config import FIELDS, Recipe

    p = _parser(stage)
    p.usage = "%(prog)s [-h] [--config RECIPE.yaml] [--print_config] [--key value ...]"
    recipe = p.add_argument_group("recipe keys (YAML `key: value` or --key value; dpo_scale/config.py)")
    defaults = Recipe()
    trl_help = {}
    if stage in TRAINING_STAGES:
        from dpo_scale.config import dpo_config_fields, dpo_config_types, passthrough_keys, trl_named_keys

        trl_help = {k: dpo_config_fields()[k].metadata.get("help", "") for k in trl_named_keys()}
    for name, f in FIELDS.items():
        text = f.metadata.get("help", "") + (f". TRL: {trl_help[name]}" if trl_help.get(name) else "")
        try:
            recipe.add_argument(f"--{name}", metavar=_metavar(f.type), default=getattr(defaults, name),
                                help=_escape(text))
        except argparse.ArgumentError:  # the stage's own option of that name wins (eval: --model; --base sets it)
            continue
    if stage in TRAINING_STAGES:

        trl = p.add_argument_group("TRL DPOConfig / transformers TrainingArguments keys (passed to DPOConfig as "
                                   "they are)")
        fields = dpo_config_fields()
        for name in passthrough_keys():
            f = fields[name]
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            trl.add_argument(f"--{name}", metavar=_metavar(dpo_config_types()[name]), default=default,
                             help=_escape(f.metadata.get("help", "")))
    else:
        p.epilog = "Every TRL DPOConfig key is accepted too: `dpo-scale train --help` lists them."
    return p.format_help()


def _metavar(hint) -> str:
    """INT, FLOAT, STR, BOOL, A,B for lists, VALUE otherwise (from a type or its text)."""
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")
    parts = [p.strip() for p in str(text).split("|") if p.strip() != "None"]
    if len(parts) != 1:
        return "VALUE"
    if parts[0].startswith("list["):
        return "A,B"
    return parts[0].upper() if parts[0] in ("int", "float", "str", "bool") else "VALUE"


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        print(f"usage: dpo-scale {{{','.join(STAGES)}}} [--config RECIPE.yaml] [--key value ...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    stage, rest = argv[0], argv[1:]
    from dpo_scale.allocator import keep_freed_memory
    from dpo_scale.model_card import COMMAND_ENV

    keep_freed_memory()

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
    from dpo_scale.resources import recipe_path

    args, unknown = _parser(stage).parse_known_args(rest)
    if args.help:
        print(_help(stage))
        return 0
    overrides = parse_overrides(unknown)
    if stage == "merge":
        overrides.update({k: v for k, v in (("adapter_dir", args.adapter), ("model", args.base),
                                            ("merged_dir", args.out)) if v})
    if stage == "eval":
        overrides.update({k: v for k, v in (("model", args.base), ("eval_questions", args.questions)) if v})
    if stage == "export":
        overrides.update({k: v for k, v in (("export_format", args.export_format),
                                            ("export_quant", args.export_quant)) if v})
    recipe = load_recipe(recipe_path(args.config) if args.config else None, overrides)
    training_args = None
    # TRL's and transformers' own checks, before any work. Not in each process of a multi-process launch: there
    # DPOConfig must be built after the process group (dpo_scale.train does, and raises the same error).
    if stage in TRAINING_STAGES and (args.print_config or int(os.environ.get("WORLD_SIZE", "1")) <= 1):
        from dpo_scale.train import build_training_args, checkpoint_dir

        training_args = build_training_args(recipe, checkpoint_dir(recipe), world_size=1)
    if args.print_config:
        from dpo_scale.config import render_config

        print(render_config(recipe, training_args), end="")
        return 0
    from contextlib import nullcontext
    from pathlib import Path

    from dpo_scale.run_lock import is_launched_worker, output_lock

    # One command per run folder (docs/reruns.md); merge/eval into other folders leave output_dir uncreated.
    lock = not is_launched_worker() and (stage in ("generate", "train", "run") or Path(recipe.output_dir).is_dir())
    with output_lock(recipe.output_dir, stage) if lock else nullcontext():
        return _dispatch(stage, args, rest, recipe)


def _dispatch(stage: str, args: argparse.Namespace, rest: list[str], recipe) -> int:
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
    elif stage == "report":
        from dpo_scale.report import report_cli

        report_cli(recipe)
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
