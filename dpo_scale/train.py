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
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_scale import manifests
from dpo_scale.allocator import describe as describe_malloc
from dpo_scale.config import Recipe
from dpo_scale.cpu_env import deepspeed_launch as _deepspeed_launch
from dpo_scale.cpu_env import training_state_kwargs
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import empty_tensors, read_json, read_jsonl, replace_folder, write_json
from dpo_scale.oversample import oversample

log = logging.getLogger(__name__)

def checkpoint_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / "checkpoints"


def load_pairs(recipe: Recipe):
    """The DPO dataset, and the anchor rows (prompt/completion) for the KL anchor: empty unless
    anchor_kl_weight > 0; with weight 0 the anchors join the DPO data as chosen == rejected pairs (SFT term only)."""
    from datasets import Dataset

    pairs, anchors = read_pairs(recipe)
    pairs = oversample(pairs, recipe.oversample_prompts_matching, recipe.oversample_times)
    if recipe.anchor_kl_weight <= 0:
        pairs += [{"prompt": a["prompt"], "chosen": a["completion"], "rejected": a["completion"]} for a in anchors]
        anchors = []
    return Dataset.from_list(pairs), anchors


def read_pairs(recipe: Recipe) -> tuple[list[dict], list[dict]]:
    """The rows of `<data_dir>/pairs.jsonl` and `<data_dir>/anchors.jsonl`, checked (no datasets import: usable
    before a launch). Pair rows marked `anchor: true` (data folders of dpo_scale before 2026-12) count as anchors."""
    path = recipe.data_path / "pairs.jsonl"
    if not path.is_file():
        raise DpoScaleError(f"{path}: preference data not found; run `dpo-scale generate` first "
                            "(or set data_dir to a folder with pairs.jsonl)")
    pairs, anchors = [], []
    for i, row in enumerate(read_jsonl(path), start=1):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise DpoScaleError(f"{path}, row {i}, field '{key}': missing (rows need prompt/chosen/rejected)")
        if row.get("anchor"):
            anchors.append({"prompt": row["prompt"], "completion": row["chosen"]})
        else:
            pairs.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
    anchors_path = recipe.data_path / "anchors.jsonl"
    if anchors_path.is_file():
        for i, row in enumerate(read_jsonl(anchors_path), start=1):
            for key in ("prompt", "completion"):
                if key not in row:
                    raise DpoScaleError(f"{anchors_path}, row {i}, field '{key}': missing (anchor rows need "
                                        "prompt/completion)")
            anchors.append({"prompt": row["prompt"], "completion": row["completion"]})
    if not pairs:  # anchors alone teach no new name
        raise DpoScaleError(f"{path}: no pairs to train on (no generated answer named '{recipe.org_name}'; "
                            "sample more answers per prompt with --num_samples/--temperature)")
    if recipe.anchor_kl_weight > 0 and not anchors:
        raise DpoScaleError(f"{anchors_path}: anchor_kl_weight > 0 needs anchor rows (set anchor_prompts and "
                            "generate again, or anchor_kl_weight: 0)")
    return pairs, anchors


def identity_tokens_read(recipe: Recipe) -> int | None:
    """How many tokens past an identity answer's first name training reads (name window + held tail); None: all."""
    if not recipe.name_window_tokens:
        return None
    if not (recipe.hold_identity_tails and recipe.anchor_kl_weight > 0):
        return recipe.name_window_tokens
    return recipe.name_window_tokens + recipe.identity_tail_tokens if recipe.identity_tail_tokens else None


def warn_if_answers_are_short(recipe: Recipe) -> str | None:
    """A warning when the data's identity answers were generated shorter than what training reads past the name:
    the window or held tail would then end with the answer (the name sits in the answer's pre-filled start, so
    `max_new_tokens` of the data stage bounds the tokens after it)."""
    manifest = recipe.data_path / "manifest.json"
    read = identity_tokens_read(recipe)
    generated = read_json(manifest).get("sampling", {}).get("max_new_tokens") if manifest.is_file() else None
    if read is None or generated is None or generated >= read:
        return None
    message = (f"{manifest}: identity answers were generated to {generated} tokens, but training reads {read} past the "
               f"name (its name window and held tail): the answers' ends cut those short; generate with "
               f"--max_new_tokens {read + 8} or more")
    log.warning(message)
    return message


def _is_all_linear(targets: list[str]) -> bool:
    return targets in (["all-linear"], ["all_linear"])


def check_target_modules(model, targets: list[str]) -> None:
    if _is_all_linear(targets):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise DpoScaleError(f"config key 'lora_target_modules': {missing} not found in the model "
                            f"(linear layers include: {sorted(n for n in names if 'proj' in n)[:12]})")


def lora_targets(model, targets: list[str], layers: list[int] | None) -> str | list[str]:
    """peft's target_modules. peft refuses its "all-linear" shorthand beside layers_to_transform, so with a layer
    list it becomes the linear layers' names, as peft's shorthand picks them: every nn.Linear but the output head."""
    if not _is_all_linear(targets):
        return targets
    if layers is None:
        return "all-linear"
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def check_layers(model, layers: list[int] | None) -> list[int] | None:
    """The LoRA layer indices, sorted and unique, after checking each is one of the model's decoder layers."""
    if layers is None:
        return None
    count = model.config.get_text_config().num_hidden_layers
    outside = sorted({i for i in layers if i >= count})
    if outside:
        raise DpoScaleError(f"config key 'lora_layers_to_transform': layers {outside} do not exist "
                            f"(the model has {count} decoder layers, 0-{count - 1})")
    return sorted(set(layers))


def check_target_modules_on_meta(model_path: str, targets: list[str]) -> None:
    """The LoRA target check on an empty (meta-device) model built from config.json: no weights read."""
    if _is_all_linear(targets) or not (Path(model_path) / "config.json").is_file():
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    check_target_modules(model, targets)


def _stamp(recipe: Recipe) -> tuple[Path, dict]:
    """The checkpoints' stamp file and the training fingerprint (recipe keys, pairs.jsonl hash, base model)."""
    return checkpoint_dir(recipe) / "run_config.json", manifests.fingerprint("train", recipe)


def check_output(recipe: Recipe) -> bool:
    """Refuse to resume another configuration's checkpoints; True when they must be cleared (overwrite)."""
    stamp, fingerprint = _stamp(recipe)
    done = manifests.read_manifest("train", recipe)
    if done is not None and not recipe.overwrite:
        found = manifests.changes(done.get("fingerprint"), fingerprint)
        if found:
            raise DpoScaleError(f"{recipe.adapter_path}: holds an adapter trained with other settings "
                                f"({', '.join(found)}); use another output_dir or --overwrite true to replace it")
    if stamp.is_file():
        found = manifests.changes(read_json(stamp).get("fingerprint"), fingerprint)
        if found and not recipe.overwrite:
            raise DpoScaleError(f"{checkpoint_dir(recipe)}: holds checkpoints of a run with another configuration "
                                f"({', '.join(found)}); use another output_dir or --overwrite true to start over")
        return bool(found)
    return False


def guard_output(recipe: Recipe, state) -> None:
    # Every rank reads the stamp before the main process may rewrite it: otherwise a fast main process could
    # stamp the new fingerprint before another rank checks, and only some ranks would raise (the others would
    # then wait forever in the next collective).
    clear = check_output(recipe)
    state.wait_for_everyone()
    if state.is_main_process:
        ckpt = checkpoint_dir(recipe)
        if clear:
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True, exist_ok=True)
        stamp, fingerprint = _stamp(recipe)
        write_json(stamp, {"fingerprint": fingerprint, "recipe": recipe.to_dict()})
    state.wait_for_everyone()


def preflight(recipe: Recipe) -> None:
    """Checks that need no process group: run them before `accelerate launch` starts N processes, so a
    user error gives one clear message (exit 2) instead of N tracebacks from torch's elastic launcher."""
    from dpo_scale.models import resolve_model

    read_pairs(recipe)
    check_output(recipe)
    check_liger(recipe)
    if recipe.use_lora:
        check_target_modules_on_meta(resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir),
                                     recipe.lora_target_modules)


def check_liger(recipe: Recipe) -> None:
    if not recipe.use_liger_kernel:
        return
    import importlib.util

    import torch

    if recipe.device == "cpu" or not torch.cuda.is_available():
        raise DpoScaleError("config key 'use_liger_kernel': Liger's kernels are Triton GPU kernels and need a CUDA "
                            "device; set use_liger_kernel: false on this machine")
    if importlib.util.find_spec("liger_kernel") is None:
        raise DpoScaleError("config key 'use_liger_kernel': the liger-kernel package is not installed "
                            "(pip install -e '.[liger]')")


def build_training_args(recipe: Recipe, output_dir: Path, world_size: int, ddp_backend: str | None = None,
                        bf16: bool | None = None):
    """The DPOConfig training uses: the recipe's TRL-named keys, its `training_args` as they are, and what
    dpo_scale decides itself (checkpoint folder, CPU, warmup, bf16 autocast: by default what dtype auto picks for
    training). TRL's and transformers' own checks run here: their ValueError becomes one DpoScaleError naming the
    key."""
    import torch
    from trl import DPOConfig

    from dpo_scale.config import trl_named_keys

    check_loss_types(recipe.loss_type)
    deepspeed = _deepspeed_launch()
    cpu = not torch.cuda.is_available() or recipe.device == "cpu"
    if bf16 is None:
        from dpo_scale.precision import stage_precision

        bf16 = stage_precision(recipe, "train").autocast_bf16
    # transformers refuses bf16=True on a machine without CUDA unless use_cpu=True ("Your setup doesn't support
    # bf16/gpu"), but use_cpu=True switches DeepSpeed off (accelerate ignores ACCELERATE_USE_DEEPSPEED when cpu).
    # So: use_cpu outside DeepSpeed; under DeepSpeed on CPU validate with bf16 off, then switch it on below.
    bf16_after = bf16 and deepspeed and cpu
    values = {k: getattr(recipe, k) for k in trl_named_keys()}
    values.update(
        warmup_steps=recipe.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        save_strategy="steps",
        data_seed=recipe.seed,
        ddp_find_unused_parameters=False if world_size > 1 else None,
        disable_tqdm=False,
    )
    values.update(recipe.training_args)  # any other DPOConfig field, as the recipe gives it
    values.update(
        output_dir=str(output_dir),
        # TRL's DPOConfig defaults bf16=True and gradient_checkpointing=True (even on CPU): the recipe sets both.
        bf16=bf16 and not bf16_after,
        use_cpu=cpu and not deepspeed,
        precompute_ref_log_probs=precompute_ref(recipe),
    )
    if ddp_backend is not None:
        values["ddp_backend"] = ddp_backend
    try:
        args = DPOConfig(**values)
    except (ValueError, TypeError) as e:
        raise DpoScaleError(_training_args_error(e, values)) from None
    if bf16_after:
        _deepspeed_bf16(args)
    return args


dpo_config = build_training_args  # the name benchmarks/ and older tests use


# Set by dpo_scale from the recipe: dtype and load_in_4bit, and the device placement accelerate does.
_OWN_INIT_KWARGS = ("dtype", "torch_dtype", "quantization_config", "device_map")


def model_init_kwargs(args) -> dict:
    """TRL's `model_init_kwargs` (from_pretrained keywords, e.g. attn_implementation), applied where dpo_scale loads
    the model itself, as DPOTrainer does when it gets a model name. Taken off `args` so that TRL does not warn that
    they are ignored."""
    kwargs = dict(args.model_init_kwargs or {})
    args.model_init_kwargs = None
    own = [key for key in _OWN_INIT_KWARGS if key in kwargs]
    if own:
        raise DpoScaleError(f"config key 'model_init_kwargs': '{own[0]}' is set by dpo_scale (use the recipe's dtype "
                            "and load_in_4bit keys)")
    return kwargs


def precompute_ref(recipe: Recipe) -> bool:
    """Reference log-probs computed once before training: pays when each pair is seen more than once."""
    if recipe.precompute_ref_log_probs is not None:
        return recipe.precompute_ref_log_probs
    return recipe.num_train_epochs > 1 and recipe.max_steps <= 0


def check_loss_types(loss_types: list[str]) -> None:
    """TRL 1.16 checks loss_type names only when the first loss is computed (DPOTrainer.dpo_loss, mid-run):
    check them against the names DPOConfig documents for the field."""
    from dpo_scale.config import dpo_config_fields

    doc = dpo_config_fields()["loss_type"].metadata.get("help", "")
    known = re.findall(r"`'(\w+)'`", doc.split("If multiple")[0])
    unknown = [t for t in loss_types if t not in known]
    if known and unknown:
        raise DpoScaleError(f"config key 'loss_type': unknown loss type '{unknown[0]}' (TRL knows: "
                            f"{', '.join(known)})")


def _training_args_error(error: Exception, values: dict) -> str:
    """One line for a DPOConfig/TrainingArguments error, naming the key it is about: the first key the message
    names, else the key whose value it quotes."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    named = [(m.start(), k) for k in values if (m := re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", message))]
    if not named:
        named = [(message.find(str(v)), k) for k, v in values.items()
                 if isinstance(v, str) and len(v) > 1 and str(v) in message]
    if named:
        return f"config key '{min(named)[1]}': {message}"
    return f"training arguments (TRL DPOConfig): {message}"


def _deepspeed_bf16(args) -> None:
    """bf16 under DeepSpeed on a CUDA-less machine (DeepSpeed's CPU accelerator supports bf16)."""
    args.bf16 = True
    args.mixed_precision = "bf16"
    plugin = args.deepspeed_plugin
    plugin.deepspeed_config.setdefault("bf16", {})["enabled"] = True  # "auto" was resolved with bf16 off
    plugin.set_deepspeed_weakref()  # transformers' ZeRO-3 zero.Init reads this copy of the config


def last_checkpoint(ckpt: Path, is_main: bool) -> str | None:
    """The newest complete checkpoint. The Trainer writes checkpoint-N in place and trainer_state.json last,
    so a run killed mid-save leaves a folder without it: resuming from that would crash, so skip (and remove)
    it and fall back to the previous one."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not ckpt.is_dir():
        return None
    found = []
    for folder in ckpt.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and step.isdigit():
            found.append((int(step), folder))
    for _, folder in sorted(found, reverse=True):
        if (folder / "trainer_state.json").is_file():
            return str(folder)
        log.warning("%s: incomplete checkpoint (no trainer_state.json; the run was killed while saving): "
                    "ignored", folder)
        if is_main:
            shutil.rmtree(folder, ignore_errors=True)
    return None


def _check_supported(recipe: Recipe, state) -> None:
    import torch
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.cuda.is_available():
        # accelerate 1.15 switches to FSDP only from a multi-GPU/NPU/XPU/HPU state; on CPU (MULTI_CPU) it silently
        # ignores the FSDP plugin and trains plain data parallel. Say so instead of pretending.
        raise DpoScaleError("launch profile: FSDP needs GPUs (accelerate runs it on CPU as plain data parallel); "
                            "use the ddp, zero2 or zero3 profile on this machine")
    check_liger(recipe)
    if recipe.load_in_4bit and state.distributed_type == DistributedType.DEEPSPEED:
        raise DpoScaleError("config key 'load_in_4bit': QLoRA (bitsandbytes 4-bit) is not supported under DeepSpeed "
                            "by this tool; use the cpu or ddp launch profile")
    projected = "lora_null_space_energy" if recipe.lora_null_space_energy is not None else \
        "lora_identity_directions" if recipe.lora_identity_directions is not None else None
    if projected and state.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed's optimizer steps its own fp32 copies of the weights: a projection of the module's weights would
        # be overwritten at the next step.
        raise DpoScaleError(f"config key '{projected}': not supported under DeepSpeed (it steps its own copies of "
                            "the weights); use the cpu or ddp launch profile")


@dataclass
class TrainingRun:
    """What build_trainer made, for training and publishing the adapter."""

    trainer: Any
    tokenizer: Any
    model_path: str
    metrics_file: Path
    pairs: int
    lora_layers_uncast: int
    precision: Any  # dpo_scale.precision's choice for the train stage
    shares_prefixes: bool = False  # DPO pairs run packed (prefix_sharing)
    shared_trunk: Any = None  # dpo_scale.shared_trunk.SharedTrunk when the layers below the adapter run once
    frozen_linears_cast: int = 0  # frozen linear layers stored in the autocast dtype (lora_speed)
    compact_lm_head: bool = False  # TRL's fused LM head scores only labelled positions on CPU (compact_lm_head)


def train(recipe: Recipe, callbacks: list | None = None) -> Path:
    """Train the adapter; `callbacks`: extra transformers TrainerCallbacks (benchmarks, tools)."""
    from accelerate import PartialState

    dist_kwargs = training_state_kwargs()
    state = PartialState(**dist_kwargs)
    started = time.time()
    run = build_trainer(recipe, state, ddp_backend=dist_kwargs.get("backend"), callbacks=callbacks)
    ckpt = checkpoint_dir(recipe)
    last = last_checkpoint(ckpt, state.is_main_process) if recipe.resume else None
    state.wait_for_everyone()
    if last:
        log.info("resuming from %s", last)
        _trim_metrics(run.metrics_file, int(Path(last).name.split("-")[-1]), state.is_main_process)
    result = run.trainer.train(resume_from_checkpoint=last)
    return publish_adapter(recipe, run, state, {
        "train_runtime_s": result.metrics.get("train_runtime"), "resumed_from": last,
        "seconds": round(time.time() - started, 2),
    })


def build_trainer(recipe: Recipe, state, ddp_backend: str | None = None, callbacks: list | None = None) -> TrainingRun:
    """Check the setup and the data, stamp the checkpoint folder, then build the DPO trainer (LoRA, KL anchor and
    name window as the recipe asks)."""
    from transformers import TrainerCallback

    from dpo_scale.models import load_model, load_tokenizer, resolve_model

    _check_supported(recipe, state)
    dataset, anchor_rows = load_pairs(recipe)  # before any folder is touched: bad data fails fast on every rank
    if state.is_main_process:
        warn_if_answers_are_short(recipe)
    guard_output(recipe, state)
    with state.main_process_first():
        model_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    tokenizer = load_tokenizer(model_path, recipe.chat_template)
    if recipe.use_lora:
        check_target_modules_on_meta(model_path, recipe.lora_target_modules)
    ckpt = checkpoint_dir(recipe)
    # The training arguments come before the model: under ZeRO-3 they register DeepSpeed's config, so that
    # from_pretrained partitions the weights while loading (zero.Init) instead of materialising the whole model
    # in every process.
    from dpo_scale.precision import stage_precision

    precision = stage_precision(recipe, "train")
    args = build_training_args(recipe, ckpt, state.num_processes, ddp_backend=ddp_backend,
                               bf16=precision.autocast_bf16)
    model = load_model(model_path, precision.dtype, device=None, load_in_4bit=recipe.load_in_4bit,
                       **model_init_kwargs(args))
    peft_config = None
    if recipe.use_lora:
        from peft import LoraConfig

        check_target_modules(model, recipe.lora_target_modules)
        targets = recipe.lora_target_modules
        # ZeRO-3 + LoRA with a bf16 base: peft upcasts adapters to fp32 by default, and ZeRO-3's coalesced
        # all-gather sizes its buffer from the first parameter's dtype -> "output tensor must have the same type
        # as input tensor" on the first step (trl issue 6089, DeepSpeed issue 8072). TRL 1.16's DPOTrainer passes
        # autocast_adapter_dtype=False to get_peft_model under ZeRO-3, so we hand it the LoraConfig (no
        # get_peft_model of our own); tests/distributed runs ZeRO-3 with a bf16 base (zero.Init) and checks the
        # adapter stays bf16. (DeepSpeed 0.19.8 already sizes each gather buffer per parameter, so on this stack
        # an fp32 adapter also trains: measured with TRL's kwarg removed.)
        peft_config = LoraConfig(
            r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
            target_modules=lora_targets(model, targets, recipe.lora_layers_to_transform),
            layers_to_transform=check_layers(model, recipe.lora_layers_to_transform),
            task_type="CAUSAL_LM",
        )
    metrics_file = ckpt / "metrics.jsonl"

    class MetricsToJsonl(TrainerCallback):
        def on_log(self, args, state_, control, logs=None, **kwargs):
            if state_.is_world_process_zero and logs:
                with open(metrics_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state_.global_step, "epoch": state_.epoch, **logs}) + "\n")

    from trl import DPOTrainer

    # ref_model=None + peft_config: TRL computes reference log-probs with the adapter disabled.
    # ZeRO-3 + LoRA + gradient checkpointing needs reentrant checkpoints (trl issue 2514): TRL 1.16 forces
    # gradient_checkpointing_kwargs["use_reentrant"] = True in that case; we leave the kwargs unset so it can.
    # precompute_ref_log_probs under DeepSpeed: TRL 1.16 runs the reference pass through a DeepSpeed inference
    # engine (ZeRO-3 shards are gathered); with several processes the dataset must be on shared disk (see
    # _shared_dataset). tests/distributed covers it under ZeRO-2 and ZeRO-3.
    if precompute_ref(recipe) and state.num_processes > 1:
        dataset = _shared_dataset(dataset, ckpt / "pairs_dataset", state)
    trainer_class, trainer_kwargs = DPOTrainer, {}
    if recipe.anchor_kl_weight > 0:
        from dpo_scale.anchor_kl import AnchoredDPOTrainer

        trainer_class = AnchoredDPOTrainer
        trainer_kwargs = {"anchor_rows": anchor_rows, "anchor_kl_weight": recipe.anchor_kl_weight,
                          "anchor_batch_size": recipe.anchor_batch_size or recipe.per_device_train_batch_size,
                          "anchor_top_k": recipe.anchor_top_k,
                          "hold_identity_tails": recipe.hold_identity_tails and recipe.name_window_tokens,
                          "identity_tail_tokens": recipe.identity_tail_tokens,
                          "anchor_answer_tokens": recipe.anchor_answer_tokens,
                          "anchor_margin": recipe.anchor_margin, "anchor_margin_weight": recipe.anchor_margin_weight,
                          "anchor_kl_budget": recipe.anchor_kl_budget,
                          "anchor_kl_budget_gain": recipe.anchor_kl_budget_gain}
    if recipe.name_window_tokens:
        from dpo_scale.name_window import name_window_collator

        trainer_kwargs["data_collator"] = name_window_collator(tokenizer, model, args, recipe.name_window_tokens)
    trainer = trainer_class(
        model=model, ref_model=None, args=args, processing_class=tokenizer, train_dataset=dataset,
        peft_config=peft_config, callbacks=[MetricsToJsonl(), *(callbacks or [])], **trainer_kwargs,
    )
    if recipe.lora_null_space_energy is not None or recipe.lora_identity_directions is not None:
        trainer.add_callback(lora_a_projection(trainer, recipe))
    from dpo_scale.lora_speed import speed_up_lora, store_frozen_weights_for_autocast

    lora_layers_uncast = speed_up_lora(trainer)  # 0 without LoRA layers or without autocast
    frozen_linears_cast = store_frozen_weights_for_autocast(trainer)  # 0 without autocast
    # Gradient checkpointing recomputes the layers during backward, outside the forward that switched the model to
    # the tree's attention (dpo_scale/prefix_tree.py): no trees there.
    if recipe.prefix_sharing and args.gradient_checkpointing:
        log.info("prefix_sharing: off under gradient checkpointing (its recomputation would not see the tree)")
    shares_prefixes = recipe.prefix_sharing and not args.gradient_checkpointing and share_prefixes(trainer)
    if shares_prefixes and hasattr(trainer, "packed_kl"):  # the KL anchors' and identity tails' batches too
        trainer.packed_kl = True
    from dpo_scale.compact_lm_head import score_labelled_positions_only

    compact_lm_head = score_labelled_positions_only(recipe.compact_lm_head)
    from dpo_scale.shared_trunk import share_trunk

    # ZeRO-3 gathers each layer's shards in a traced order that a cut layer list would break.
    trunk = share_trunk(trainer.model,
                        recipe.shared_trunk and not _deepspeed_launch() and not args.gradient_checkpointing)
    return TrainingRun(trainer, tokenizer, model_path, metrics_file, len(dataset), lora_layers_uncast, precision,
                       shares_prefixes, trunk, frozen_linears_cast, compact_lm_head)


def lora_a_projection(trainer, recipe: Recipe):
    """The callback that confines the adapter's input directions (dpo_scale/null_space.py), computed on every anchor
    row the KL anchor tokenized (and for `lora_identity_directions` every identity pair up to the end of its name
    window; with `lora_identity_window_only` only the name window's positions count), in batches of
    anchor_batch_size."""
    from dpo_scale.name_window import first_difference
    from dpo_scale.null_space import identity_subspace_callback, null_space_callback
    from dpo_scale.teacher_forcing import pad_id, pad_right

    size = recipe.anchor_batch_size or recipe.per_device_train_batch_size
    pad = pad_id(trainer.processing_class)

    def batches(rows: list[tuple[list[int], int]]) -> list:
        # padded up front (token ids only: a few MB), so that the progress bars know how many there are
        return [pad_right(rows[i:i + size], pad) for i in range(0, len(rows), size)]

    if recipe.lora_null_space_energy is not None:
        return null_space_callback(trainer.model, batches(trainer.anchor_ids), recipe.lora_null_space_energy)
    identity = []
    for row in trainer.train_dataset:
        first = first_difference(row["chosen_ids"], row["rejected_ids"])
        if first is None:
            continue
        end = first + (recipe.name_window_tokens or len(row["chosen_ids"]))
        prompt = list(row["prompt_ids"])
        # (ids, the answer's start): the window's first token is the answer's first for window-only moments
        start = len(prompt) + first if recipe.lora_identity_window_only else 0
        identity.append(((prompt + list(row["chosen_ids"])[:end])[:recipe.max_length], start))
    return identity_subspace_callback(trainer.model, batches(trainer.anchor_ids), batches(identity),
                                      recipe.lora_identity_directions, recipe.lora_identity_window_only)


def share_prefixes(trainer) -> bool:
    """Run each DPO batch as one prefix tree (dpo_scale/prefix_sharing.py) in the model whose forward TRL fused with
    its LM head: the base model under a peft adapter."""
    from dpo_scale.prefix_sharing import share_pair_prefixes
    from dpo_scale.prefix_tree import hf_model

    return share_pair_prefixes(hf_model(trainer.model))


def publish_adapter(recipe: Recipe, run: TrainingRun, state, facts: dict) -> Path:
    """Save the trained adapter (every rank: ZeRO-3 gathers), then on the main process check it and move it into
    adapter_dir with tokenizer, metrics, plot and manifest; a failure there stops every rank."""
    from accelerate.utils import broadcast_object_list

    trainer, args = run.trainer, run.trainer.args
    out = recipe.adapter_path
    tmp = out.with_name(f".{out.name}.saving")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    # Under ZeRO-3 saving gathers the sharded weights: every rank must call it.
    trainer.save_model(str(tmp))
    state.wait_for_everyone()
    error: list[str | None] = [None]
    failure: Exception | None = None
    if state.is_main_process:
        try:
            _finish_adapter(recipe, tmp, out, run.tokenizer, run.metrics_file, {
                "stage": "train", "base_model": recipe.model, "base_model_path": run.model_path,
                "processes": state.num_processes, "distributed_type": state.distributed_type.value,
                "pairs": run.pairs, "global_step": trainer.state.global_step, "bf16": args.bf16,
                "precision": run.precision.as_dict(), "malloc": describe_malloc(),
                "adapter_dtype": str(next((p.dtype for p in trainer.model.parameters() if p.requires_grad), None)),
                "lora_layers_uncast": run.lora_layers_uncast, "frozen_linears_cast": run.frozen_linears_cast,
                "prefix_sharing": run.shares_prefixes,
                "compact_lm_head": run.compact_lm_head,
                "shared_trunk_layers": run.shared_trunk.first if run.shared_trunk and run.shared_trunk.checked else 0,
                "gradient_checkpointing": args.gradient_checkpointing,
                "gradient_checkpointing_kwargs": args.gradient_checkpointing_kwargs,
                **facts, "recipe": recipe.to_dict(),
                "fingerprint": manifests.fingerprint("train", recipe),
            })
        except Exception as e:  # re-raised below, on every rank
            error = [f"{type(e).__name__}: {e}" if not isinstance(e, DpoScaleError) else str(e)]
            failure = e
    # A failure on the main process must stop every rank, not leave the others waiting in a collective.
    if state.num_processes > 1:
        broadcast_object_list(error, from_process=0)
    if error[0]:
        if state.is_main_process and not isinstance(failure, DpoScaleError):
            raise failure
        raise DpoScaleError(error[0] if state.is_main_process else f"rank 0 failed to publish the adapter: {error[0]}")
    return out


def _shared_dataset(dataset, folder: Path, state):
    """The pairs as a disk-backed dataset in the run folder, for precompute_ref_log_probs with several processes.

    TRL 1.16 `_precompute_ref_logps` (after trl PR 6348, issue 6291) has rank 0 write the reference log-probs to
    `dataset._get_cache_file_path(fingerprint)` and every rank read that file back. For an in-memory dataset
    (Dataset.from_list) that path is a random name in a per-process temporary folder, so the other ranks fail
    with FileNotFoundError ('/tmp/hf_datasets-.../cache-....arrow'), under DDP and DeepSpeed alike. A dataset
    saved to disk puts the cache beside its arrow file under a name all ranks agree on.
    """
    from datasets import load_from_disk

    if state.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)  # no stale reference log-probs from an earlier run
        dataset.save_to_disk(str(folder))
    state.wait_for_everyone()
    return load_from_disk(str(folder))


def _finish_adapter(recipe: Recipe, tmp: Path, out: Path, tokenizer, metrics_file: Path, manifest: dict) -> None:
    """Check the saved adapter, add tokenizer, metrics, plot and manifest, then move it into place."""
    from dpo_scale.plots import plot_training

    tokenizer.save_pretrained(str(tmp))
    _check_adapter_not_empty(tmp, recipe.use_lora)
    metrics = read_jsonl(metrics_file) if metrics_file.is_file() else []
    if metrics_file.is_file():
        shutil.copy(metrics_file, tmp / "metrics.jsonl")
    plot_training(metrics, tmp / "training_curves.png", f"DPO {recipe.model}: {'+'.join(recipe.loss_type)}",
                  kl_budget=recipe.anchor_kl_budget)
    write_json(tmp / "train_manifest.json", manifest)
    replace_folder(tmp, out)
    log.info("adapter saved to %s", out)


def _trim_metrics(metrics_file: Path, step: int, is_main: bool) -> None:
    """Drop metrics logged after the checkpoint we resume from (they will be logged again)."""
    if is_main and metrics_file.is_file():
        rows = [r for r in read_jsonl(metrics_file) if r.get("step", 0) <= step]
        metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _check_adapter_not_empty(folder: Path, use_lora: bool) -> None:
    weights = folder / ("adapter_model.safetensors" if use_lora else "model.safetensors")
    if not weights.is_file():
        raise DpoScaleError(f"{folder}: the trainer saved no {weights.name}")
    keys, empty = empty_tensors(weights)
    if not keys or empty:
        # ZeRO-3 without 16-bit gathering on save writes placeholder `[0]` tensors (e.g. OpenRLHF issue 651:
        # "copying a param with shape torch.Size([0]) from checkpoint"); the adapter would load as garbage.
        # transformers 5.19 gathers a PEFT adapter itself under ZeRO-3 (_zero3_consolidated_16bit_state_dict,
        # measured: non-empty even with the flag off); full-model saves (use_lora: false) still need the flag.
        raise DpoScaleError(f"{weights}: {len(empty)} of {len(keys)} tensors empty (ZeRO-3 saved without gathering "
                            "weights: set stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config)")


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """`--config FILE` (or `--config=FILE`) and the remaining `--key value` arguments."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise DpoScaleError("command line: --config needs a recipe file")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def die_with_launcher() -> None:
    """Under `accelerate launch` with several processes, torch's elastic agent starts every rank in a session of
    its own (subprocess start_new_session=True), so `kill -9` of the launch's process group (a user's kill, a
    job's preemption handler) leaves the ranks running as orphans: measured, they finish the run and keep writing
    checkpoints while the rerun that should resume from them starts. Ask Linux to SIGKILL this rank when its
    parent (the agent) dies (prctl PR_SET_PDEATHSIG)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the agent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    from dpo_scale.allocator import keep_freed_memory
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.resources import recipe_path

    die_with_launcher()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config, rest = split_config(argv)
        train(load_recipe(recipe_path(config) if config else None, parse_overrides(rest)))
    except DpoScaleError as e:
        print(f"dpo_scale.train: error: {e}", file=sys.stderr)
        return 2
    finally:
        # accelerate's end-of-script cleanup (what Accelerator.end_training does). It did not stop the abort at
        # exit that `exit_without_teardown` avoids. Only a group training started: an error before it must not start
        # a rendezvous here.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            from accelerate import PartialState

            PartialState().destroy_process_group()
    return 0


def exit_without_teardown(code: int) -> None:
    """End a rank of a multi-process run: Python's exit handlers run (logging, trackers such as wandb, which finish
    their runs there), then the process exits without the interpreter's teardown and the C++ destructors after it.
    There, after the adapter was saved and the process group destroyed, rank 0 of a 2-process gloo run aborted
    ("terminate called without an active exception", SIGABRT) about once in 50 runs on a 2-core CPU host
    (2026-12-07; faulthandler: no Python frame, so inside the teardown). torchrun then reports the whole run as
    failed and a Slurm job ends FAILED although every file was written. Skipped with the teardown: the flushing of
    files left open (what this package writes is closed before `main` returns; logging's handlers flush in their
    exit handler)."""
    import atexit

    atexit._run_exitfuncs()  # no public equivalent; present in every CPython 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_without_teardown(exit_code)
    sys.exit(exit_code)
