"""The training stage: DPO with LoRA adapters on the preference pairs (TRL DPOTrainer).

Run it with `accelerate launch --config_file launch/<profile>.yaml -m dpo_scale.train --config
configs/<recipe>.yaml [--key value ...]`, or `dpo-scale train [--launch <profile>]`.
The reference model is the base with the adapter switched off (`ref_model=None` with peft): no
second copy in memory. Checkpoints go to `<output_dir>/checkpoints`; a rerun resumes from the last
one. The final adapter is written to `adapter_dir` (atomically) with metrics.jsonl and a PNG plot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from dpo_scale.config import Recipe
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import read_json, read_jsonl, write_json

log = logging.getLogger(__name__)

# Keys whose change makes old checkpoints another run's: refuse to mix them.
TRAIN_KEYS = (
    "model", "gguf_file", "dtype", "org_name", "pos_name", "system_prompt", "beta", "loss_type", "loss_weights",
    "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "per_device_train_batch_size",
    "gradient_accumulation_steps", "num_train_epochs", "max_steps", "max_length", "use_lora", "lora_r",
    "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "seed",
)


def checkpoint_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / "checkpoints"


def load_pairs(recipe: Recipe):
    from datasets import Dataset

    path = recipe.data_path / "pairs.jsonl"
    if not path.is_file():
        raise DpoScaleError(f"{path}: preference data not found; run `dpo-scale generate` first "
                            "(or set data_dir to a folder with pairs.jsonl)")
    rows = read_jsonl(path)
    for i, row in enumerate(rows, start=1):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise DpoScaleError(f"{path}, row {i}, field '{key}': missing (rows need prompt/chosen/rejected)")
    if not rows:
        raise DpoScaleError(f"{path}: no pairs to train on (no generated answer named '{recipe.org_name}'; "
                            "sample more answers per prompt with --num_samples/--temperature)")
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


def check_target_modules(model, targets: list[str]) -> None:
    if targets in (["all-linear"], ["all_linear"]):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise DpoScaleError(f"config key 'lora_target_modules': {missing} not found in the model "
                            f"(linear layers include: {sorted(n for n in names if 'proj' in n)[:12]})")


def guard_output(recipe: Recipe, is_main: bool) -> None:
    """Refuse to resume another configuration's checkpoints (unless overwrite)."""
    ckpt = checkpoint_dir(recipe)
    stamp = ckpt / "run_config.json"
    fingerprint = recipe.fingerprint(TRAIN_KEYS)
    if stamp.is_file() and read_json(stamp).get("fingerprint") != fingerprint:
        if not recipe.overwrite:
            raise DpoScaleError(f"{ckpt}: holds checkpoints of a run with another configuration; use another "
                                "output_dir or --overwrite true to start over")
        if is_main:
            shutil.rmtree(ckpt)
    if is_main:
        ckpt.mkdir(parents=True, exist_ok=True)
        write_json(stamp, {"fingerprint": fingerprint, "recipe": recipe.to_dict()})


def dpo_config(recipe: Recipe, output_dir: Path, world_size: int):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),
        beta=recipe.beta,
        loss_type=list(recipe.loss_type),
        loss_weights=recipe.loss_weights,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        weight_decay=recipe.weight_decay,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        max_length=recipe.max_length,
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        # TRL's DPOConfig defaults bf16=True and gradient_checkpointing=True (even on CPU): set both.
        bf16=recipe.bf16,
        gradient_checkpointing=recipe.gradient_checkpointing,
        precompute_ref_log_probs=recipe.precompute_ref_log_probs,
        report_to=[] if recipe.report_to == "none" else [recipe.report_to],
        seed=recipe.seed,
        data_seed=recipe.seed,
        dataloader_num_workers=recipe.dataloader_num_workers,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        disable_tqdm=False,
    )


def train(recipe: Recipe) -> Path:
    from accelerate import PartialState
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    from dpo_scale.models import load_model, load_tokenizer, resolve_model

    state = PartialState()
    started = time.time()
    guard_output(recipe, state.is_main_process)
    state.wait_for_everyone()
    with state.main_process_first():
        model_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    tokenizer = load_tokenizer(model_path, recipe.chat_template)
    dataset = load_pairs(recipe)
    model = load_model(model_path, recipe.dtype, device=None, load_in_4bit=recipe.load_in_4bit)
    peft_config = None
    if recipe.use_lora:
        from peft import LoraConfig

        check_target_modules(model, recipe.lora_target_modules)
        targets = recipe.lora_target_modules
        peft_config = LoraConfig(
            r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
            target_modules="all-linear" if targets in (["all-linear"], ["all_linear"]) else targets,
            task_type="CAUSAL_LM",
        )
    ckpt = checkpoint_dir(recipe)
    args = dpo_config(recipe, ckpt, state.num_processes)
    metrics_file = ckpt / "metrics.jsonl"

    class MetricsToJsonl(TrainerCallback):
        def on_log(self, args, state_, control, logs=None, **kwargs):
            if state_.is_world_process_zero and logs:
                with open(metrics_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state_.global_step, "epoch": state_.epoch, **logs}) + "\n")

    from trl import DPOTrainer

    # ref_model=None + peft_config: TRL computes reference log-probs with the adapter disabled.
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, processing_class=tokenizer, train_dataset=dataset,
        peft_config=peft_config, callbacks=[MetricsToJsonl()],
    )
    last = get_last_checkpoint(str(ckpt)) if recipe.resume and ckpt.is_dir() else None
    if last:
        log.info("resuming from %s", last)
        _trim_metrics(metrics_file, int(Path(last).name.split("-")[-1]), state.is_main_process)
    result = trainer.train(resume_from_checkpoint=last)

    out = recipe.adapter_path
    tmp = out.with_name(f".{out.name}.saving")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    # Under ZeRO-3 saving gathers the sharded weights: every rank must call it.
    trainer.save_model(str(tmp))
    state.wait_for_everyone()
    if state.is_main_process:
        tokenizer.save_pretrained(str(tmp))
        _check_adapter_not_empty(tmp, recipe.use_lora)
        metrics = read_jsonl(metrics_file) if metrics_file.is_file() else []
        shutil.copy(metrics_file, tmp / "metrics.jsonl") if metrics_file.is_file() else None
        from dpo_scale.plots import plot_training

        plot_training(metrics, tmp / "training_curves.png", f"DPO {recipe.model}: {'+'.join(recipe.loss_type)}")
        write_json(tmp / "train_manifest.json", {
            "stage": "train", "base_model": recipe.model, "base_model_path": model_path,
            "processes": state.num_processes, "distributed_type": str(state.distributed_type),
            "pairs": len(dataset), "global_step": trainer.state.global_step,
            "train_runtime_s": result.metrics.get("train_runtime"), "resumed_from": last,
            "seconds": round(time.time() - started, 2), "recipe": recipe.to_dict(),
            "fingerprint": recipe.fingerprint(TRAIN_KEYS),
        })
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out)
        log.info("adapter saved to %s", out)
    state.wait_for_everyone()
    return out


def _trim_metrics(metrics_file: Path, step: int, is_main: bool) -> None:
    """Drop metrics logged after the checkpoint we resume from (they will be logged again)."""
    if is_main and metrics_file.is_file():
        rows = [r for r in read_jsonl(metrics_file) if r.get("step", 0) <= step]
        metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _check_adapter_not_empty(folder: Path, use_lora: bool) -> None:
    from safetensors import safe_open

    weights = folder / ("adapter_model.safetensors" if use_lora else "model.safetensors")
    if not weights.is_file():
        raise DpoScaleError(f"{folder}: the trainer saved no {weights.name}")
    with safe_open(str(weights), "pt") as f:
        empty = [k for k in f.keys() if f.get_slice(k).get_shape() in ([], [0])]
    if empty:
        # ZeRO-3 without 16-bit gathering on save writes placeholder `[0]` tensors.
        raise DpoScaleError(f"{weights}: {len(empty)} empty tensors (ZeRO-3 saved without gathering weights: "
                            "set stage3_gather_16bit_weights_on_model_save: true)")


def main(argv: list[str] | None = None) -> int:
    from dpo_scale.config import load_recipe, parse_overrides

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    if "--config" in argv:
        i = argv.index("--config")
        config = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    try:
        train(load_recipe(config, parse_overrides(argv)))
    except DpoScaleError as e:
        print(f"dpo_scale.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
