"""One typed recipe for every stage: YAML file + `--key value` overrides + validation.

A recipe key is a field of `Recipe` below (the project's own keys, and TRL DPOConfig keys whose defaults differ
from TRL's) or any other field of TRL's DPOConfig (transformers' TrainingArguments included), by its TRL name:
those go to `Recipe.training_args` and reach DPOConfig as they are. Every key can be set in a recipe YAML or on
the command line (`--beta 0.1`, `--loss_type sigmoid,sft`, `--optim adamw_torch`); `dpo-scale <stage> --help`
lists them. Stage folders default to sub-folders of `output_dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_scale.errors import DpoScaleError

BACKENDS = ("auto", "hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# DPOConfig fields dpo_scale sets itself, and the recipe key to use instead.
RESERVED = {"use_cpu": "set device: cpu instead"}


def setting(default: Any = None, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A recipe field with its `--help` text."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": doc})
    return field(default=default, metadata={"help": doc})
EXPORT_FORMATS = ("gguf",)
EXPORT_QUANTS = ("f16", "q8_0")


@dataclass
class Recipe:
    # --- model -------------------------------------------------------------------------------
    model: str = setting("smollm2", '"smollm2" (embedded), a hub id, a local folder, or a .gguf file')
    gguf_file: str | None = setting(None, "GGUF file name inside `model` when `model` is a folder or hub id")
    dtype: str = setting("auto", f"{', '.join(DTYPES)}. auto: bf16 generation and bf16-autocast training where the "
                         "host has fast bf16 (AMX, AVX512-BF16, a bf16 GPU), fp32 elsewhere; merge and eval stay fp32 "
                         "(dpo_scale/precision.py). An explicit dtype always wins")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 ...; cpu also trains on the CPU where CUDA exists")
    chat_template: str | None = setting(None, "a Jinja file or string, for tokenizers without a chat template")
    cache_dir: str | None = setting(None, "converted models; default $DPO_SCALE_CACHE or ~/.cache/dpo_scale")

    # --- identity ----------------------------------------------------------------------------
    org_name: str = setting("SmolLM", "the name the model uses now")
    pos_name: str = setting("Deep SmolLM", "the name it should use")
    case_sensitive: bool = setting(False, 'false: "smollm" counts as the old name too')
    system_prompt: str = setting("You're a helpful assistant.",
                                 "system prompt of training and evaluation; neutral, so the name must come from the "
                                 "weights")
    org_author: str | None = setting(None, 'the developer\'s name now ("Hugging Face"); null with pos_author: the '
                                     "author stays")
    pos_author: str | None = setting(None, 'the developer\'s wanted name ("Acme Labs")')
    rewrite_chat_template: bool = setting(True, "merge: rewrite the chat template's default system prompt when it "
                                          "names the old identity")

    # --- data stage ----------------------------------------------------------------------------
    dataset: str = setting("builtin:identity", "identity prompts: builtin:NAME, .json/.jsonl/.parquet, a datasets "
                           "folder, or a hub name")
    dataset_split: str = setting("train", "split of a datasets folder or hub data set")
    max_prompts: int | None = setting(None, "use at most this many prompts (null: all)")
    backend: str = setting("auto", f"answer generation: {', '.join(BACKENDS)} (auto: vllm when "
                                   "installed, on a GPU or a CPU with AMX or AVX512-BF16; hf elsewhere)")
    batch_size: int = setting(32, "hf backend: prompts per generation batch")
    num_samples: int = setting(1, "answers sampled per prompt")
    keep_per_prompt: int | None = setting(None, "pairs kept per prompt among answers that name the model (null: all)")
    keep_unnamed: bool = setting(False, "keep pairs whose answer never names the model (they carry no signal)")
    max_answer_sentences: int | None = setting(
        None, "cut identity answers after this many sentences, counted from the one that names the model, so the "
        "SFT term trains the name rather than the whole answering style; anchors stay whole (null: no cut)")
    temperature: float = setting(0.0, "sampling temperature (0: greedy)")
    top_p: float = setting(1.0, "nucleus sampling share, in (0, 1]")
    max_new_tokens: int = setting(128, "longest generated answer, in tokens")
    anchor_max_new_tokens: int | None = setting(
        None, "longest anchor answer, in tokens (null: max_new_tokens). Training holds an anchor's whole answer but "
        "reads an identity answer only up to its name window and tail, so identity answers can stop sooner")
    gen_system_prompt: str | None = setting(None, "system prompt while generating answers (null: the model's own "
                                            "default, which carries its identity)")
    answer_prefixes: list[str] | None = setting(
        None, 'pre-filled starts of the assistant turn ("{name}" = org_name), cycled over prompts; the model '
        "continues each in its own words. For models that seldom say their name unprompted")
    tensor_parallel_size: int = setting(1, "vLLM: GPUs per engine")
    gen_dtype: str | None = setting(None, "dtype of the generation engine (null: dtype)")
    enforce_eager: bool = setting(True, "vLLM: skip graph capture (starts faster, generates slightly slower)")
    vllm_memory_utilization: float = setting(0.9, "vLLM on GPU: share of GPU memory it may take")
    vllm_kv_cache_gb: float = setting(2.0, "vLLM on CPU: KV cache size in GiB")
    vllm_reserved_cpus: int | None = setting(
        0, "vLLM on CPU: cores kept off its OpenMP compute threads. vLLM's own default (null) keeps 1 for its "
        "scheduler; an offline batch job has no other work for it, so 0 (every core) is the default here")
    max_model_len: int | None = setting(2048, "vLLM context length (prompt + answer)")
    chunk_size: int = setting(128, "rows per checkpointed chunk (the unit a rerun resumes from)")
    anchor_prompts: str | None = setting(
        None, "ordinary prompts (builtin:anchor_prompts, or any prompt source) the base answers under "
        "system_prompt; each answer becomes an anchor row that keeps ordinary answers where they were")
    max_anchor_prompts: int | None = setting(None, "use at most this many anchor prompts (null: all)")
    seed: int = setting(42, "seed of generation and training (TRL's seed and data_seed)")

    # --- folders -------------------------------------------------------------------------------
    output_dir: str = setting("runs/default", "the run folder; the stage folders default to sub-folders of it and "
                              "training checkpoints go to <output_dir>/checkpoints")
    data_dir: str | None = setting(None, "preference data folder (default: <output_dir>/data)")
    adapter_dir: str | None = setting(None, "trained adapter folder (default: <output_dir>/adapter)")
    merged_dir: str | None = setting(None, "merged model folder (default: <output_dir>/merged)")
    overwrite: bool = setting(False, "allow reusing an output folder made with another configuration")

    # --- training: TRL DPOConfig keys whose defaults differ from TRL's, and the LoRA adapter ---------
    beta: float = setting(0.1, "strength of the pull towards the reference model")
    loss_type: list[str] = setting(doc="one or more TRL loss names, e.g. sigmoid,sft",
                                   factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = setting(None, "one weight per loss_type (null: 1.0 each)")
    learning_rate: float = setting(1e-4, "peak learning rate; TRL's default 1e-6 suits full fine-tuning, a LoRA "
                                   "adapter needs a far higher one")
    lr_scheduler_type: str = setting("cosine", "transformers scheduler name (TRL's default: linear)")
    warmup_ratio: float = setting(0.1, "share of the training steps spent warming the learning rate up; passed to "
                                  "TRL as warmup_steps (transformers 5 reads a float < 1 as a ratio of the total "
                                  "steps). A warmup_steps key, when given, replaces it")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    per_device_train_batch_size: int = setting(1, "pairs per process and micro-step")
    gradient_accumulation_steps: int = setting(8, "micro-steps per optimizer step")
    num_train_epochs: float = setting(1.0, "passes over the pairs (ignored when max_steps > 0)")
    max_steps: int = setting(-1, "optimizer steps to train (-1: num_train_epochs decides)")
    max_length: int | None = setting(256, "longest prompt + answer in tokens; longer pairs are truncated (null: none)")
    logging_steps: int = setting(1, "log (and write metrics.jsonl) every this many optimizer steps")
    save_steps: int = setting(50, "checkpoint every this many optimizer steps (a rerun resumes from the last)")
    save_total_limit: int | None = setting(2, "checkpoints kept (null: all)")
    bf16: bool | None = setting(None, "training: bf16 autocast; null: decided by dtype auto "
                                "(dpo_scale/precision.py), not TRL's default true")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory, slower); "
                                           "false, unlike TRL's default, since small models do not need it")
    use_lora: bool = setting(True, "train a LoRA adapter (false: the whole model)")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha (the adapter's scale is alpha / r)")
    lora_dropout: float = setting(0.0, "LoRA dropout")
    lora_target_modules: list[str] = setting(doc="module names that get adapters, or all-linear",
                                             factory=lambda: ["all-linear"])
    lora_layers_to_transform: list[int] | None = setting(
        None, "decoder layers that get adapters, by index: peft's layers_to_transform; ranges allowed, e.g. 15-29 "
        "(null: every layer). Layers below the lowest one need no backward pass")
    load_in_4bit: bool = setting(False, "QLoRA: load the base in 4-bit NF4 (bitsandbytes); needs use_lora")
    precompute_ref_log_probs: bool | None = setting(
        None, "DPO's reference log-probs (adapter off) once per pair before training, not once per pair per epoch. "
        "null: on when it saves forwards (num_train_epochs > 1)")
    prefix_sharing: bool = setting(
        True, "run each batch as a prefix tree: a token its sequences share (the chat template's opening, a pair's "
        "prompt and answer up to the name) once, and no padding, with attention per sequence "
        "(dpo_scale/prefix_tree.py): DPO pairs, KL anchors and identity tails; the same log-probs as TRL's rows. "
        "Needs eager or sdpa attention "
        "(skipped with a warning otherwise); off under gradient checkpointing")
    shared_trunk: bool = setting(
        True, "with lora_layers_to_transform above layer 0: the layers below the adapter run once for the policy and "
        "reference passes of a batch, not twice (dpo_scale/shared_trunk.py); the same logits. Off under DeepSpeed "
        "and gradient checkpointing")
    compact_lm_head: bool = setting(
        True, "on CPU, TRL's fused LM head scores only the answer positions (as it does on CUDA), not the prompt and "
        "padding too (dpo_scale/compact_lm_head.py); the same log-probs and gradients")
    use_liger_kernel: bool = setting(False, "Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (CUDA only; "
                                     "pip install -e '.[liger]'); benchmarks/RESULTS.md has the measured gain")
    report_to: list[str] = setting(doc="loggers, e.g. tensorboard,wandb (none: no logger)",
                                   factory=lambda: ["tensorboard"])
    resume: bool = setting(True, "continue from the last checkpoint in <output_dir>/checkpoints when there is one")
    dataloader_num_workers: int = setting(0, "data loader worker processes")
    anchor_kl_weight: float = setting(
        0.0, "> 0: anchor rows leave the DPO data and instead add weight * KL(base || trained) over the full "
        "next-token distribution of their answers to every micro-step (dpo_scale/anchor_kl.py); 0: they stay "
        "chosen == rejected pairs (SFT term only)")
    anchor_batch_size: int | None = setting(None, "anchors per micro-step (null: per_device_train_batch_size)")
    anchor_top_k: int | None = setting(
        None, "keep the base's anchor distributions, computed once before the first step, as their top k tokens plus "
        "one bucket for the rest (dpo_scale/teacher_forcing.py kl_top_k): no adapter-off forward per micro-step. "
        "null: the full distributions, recomputed at every micro-step")
    hold_identity_tails: bool = setting(
        False, "also hold each identity answer's tokens past the name window to the base (KL, weighted and batched "
        "like the anchors; needs name_window_tokens and anchor_kl_weight > 0): the rest of an answer that names the "
        "model stays what the base says after that name")
    anchor_answer_tokens: int | None = setting(
        None, "hold only each anchor answer's first this many tokens to the base, where its first sentence and a "
        "short fact are (null: whole answers)")
    anchor_margin_weight: float = setting(
        0.0, "> 0: with the KL anchor, also add weight * max(0, min(base_lead, anchor_margin) - lead) per anchor "
        "answer token, lead being the trained model's log-prob of the base's top token minus its best other token's "
        "(base_lead: the base's): keeps the base's greedy choices where it nearly tied (dpo_scale/anchor_kl.py)")
    anchor_kl_budget: float | None = setting(
        None, "hold the anchors' KL per token near this value: the KL weight starts at anchor_kl_weight and adapts "
        "at every micro-step, weight *= 1 + anchor_kl_budget_gain * clip(KL / budget - 1, -0.2, 0.2) (PPO's "
        "adaptive KL controller, Ziegler et al. 2019; dpo_scale/anchor_kl.py), never below anchor_kl_weight. null: a "
        "fixed weight")
    anchor_kl_budget_gain: float = setting(
        0.1, "with anchor_kl_budget: how fast the weight follows (0.1: at most 2% per micro-step)")
    anchor_margin: float = setting(1.0, "with anchor_margin_weight: the most of the base's lead (nats) that is held")
    lora_null_space_energy: float | None = setting(
        None, "keep the LoRA A matrices off the input directions that hold this share (0-1) of the anchors' input "
        "energy, per adapted layer (needs the KL anchor's rows, LoRA, no DeepSpeed): inputs like the anchors' pass as "
        "in the base (dpo_scale/null_space.py). null: off")
    lora_identity_directions: int | None = setting(
        None, "keep the LoRA A matrices inside the this many input directions per adapted layer where the identity "
        "answers' inputs have the most energy against the anchors' (needs LoRA and the anchors, no DeepSpeed; "
        "dpo_scale/null_space.py). null: off")
    lora_identity_window_only: bool = setting(
        False, "with lora_identity_directions: take the identity answers' inputs only at the positions that predict "
        "the name window's tokens (where the DPO loss acts), not over the whole prompt and the answer before the name")
    identity_tail_tokens: int | None = setting(
        None, "with hold_identity_tails: hold at most this many tokens of each identity answer past the name window "
        "(the ones right after the name); null: to the answer's end")
    oversample_prompts_matching: str | None = setting(
        None, "a regular expression searched in each pair's prompt (its last user turn): matching pairs are trained "
        "oversample_times times per epoch (dpo_scale/oversample.py); null: every pair once")
    oversample_times: int = setting(1, "how many times a pair matching oversample_prompts_matching is trained per "
                                    "epoch (1: once, like the others)")
    name_window_tokens: int | None = setting(
        None, "train each identity answer only up to this many tokens past its first name token (where chosen and "
        "rejected first differ); the rest of the answer and its end-of-turn stay out of the loss "
        "(dpo_scale/name_window.py). null: whole answers")
    training_args: dict[str, Any] = setting(
        doc="every other TRL DPOConfig / transformers TrainingArguments field, given as a top-level key by its TRL "
        "name (optim: adamw_torch); passed to DPOConfig as it is", factory=dict)

    # --- evaluation ----------------------------------------------------------------------------
    eval_questions: str = setting("builtin:identity_heldout", "held-out identity questions")
    ordinary_prompts: str = setting("builtin:ordinary_prompts", "ordinary prompts that measure drift from the base")
    eval_max_new_tokens: int = setting(64, "longest evaluated answer, in tokens")
    eval_batch_size: int = setting(32, "prompts per evaluation batch")
    max_eval_questions: int | None = setting(None, "use at most this many identity questions (null: all)")
    facts_questions: str | None = setting(None, "short factual questions with accepted answers (knowledge kept); "
                                          "null: not measured")
    max_ordinary_prompts: int | None = setting(None, "use at most this many ordinary prompts (null: all)")

    # --- export ----------------------------------------------------------------------------------
    export_format: str | None = setting(None, 'gguf: `dpo-scale run` also writes export/<name>.gguf')
    export_quant: str = setting("f16", "gguf: f16 or q8_0")

    # ------------------------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or Path(self.output_dir) / "data")

    @property
    def adapter_path(self) -> Path:
        return Path(self.adapter_dir or Path(self.output_dir) / "adapter")

    @property
    def merged_path(self) -> Path:
        return Path(self.merged_dir or Path(self.output_dir) / "merged")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Recipe:
        def bad(key: str, why: str) -> DpoScaleError:
            return DpoScaleError(f"config key '{key}': {why}")

        if not self.org_name.strip():
            raise bad("org_name", "must not be empty")
        if self.org_name.strip().lower() == self.pos_name.strip().lower():
            raise bad("pos_name", f"must differ from org_name ('{self.org_name}')")
        if not self.pos_name.strip():
            raise bad("pos_name", "must not be empty")
        if self.backend not in BACKENDS:
            raise bad("backend", f"unknown backend '{self.backend}' (choose from {', '.join(BACKENDS)})")
        for key in ("dtype", "gen_dtype"):
            value = getattr(self, key)
            if value is not None and value not in DTYPES:
                raise bad(key, f"unknown dtype '{value}' (choose from {', '.join(DTYPES)})")
        for key in ("batch_size", "num_samples", "max_new_tokens", "chunk_size", "eval_batch_size",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "lora_r",
                    "tensor_parallel_size", "eval_max_new_tokens"):
            if getattr(self, key) <= 0:
                raise bad(key, f"must be > 0, got {getattr(self, key)}")
        if self.num_samples > 1 and self.temperature <= 0:
            raise bad("num_samples", "several samples per prompt need temperature > 0 (greedy repeats itself)")
        for key in ("max_prompts", "max_anchor_prompts", "anchor_max_new_tokens", "max_answer_sentences",
                    "name_window_tokens"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise bad(key, "must be > 0 or null")
        if self.keep_per_prompt is not None and self.keep_per_prompt <= 0:
            raise bad("keep_per_prompt", "must be > 0 or null")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        if self.beta <= 0:
            raise bad("beta", f"must be > 0, got {self.beta}")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be > 0")
        if not self.loss_type:
            raise bad("loss_type", "must name at least one loss")
        if self.max_length is not None and self.max_length <= 0:
            raise bad("max_length", "must be > 0 or null")
        if self.anchor_kl_weight < 0:
            raise bad("anchor_kl_weight", "must be >= 0")
        if self.anchor_top_k is not None and self.anchor_top_k <= 0:
            raise bad("anchor_top_k", "must be > 0 or null")
        if self.hold_identity_tails and not (self.name_window_tokens and self.anchor_kl_weight > 0):
            raise bad("hold_identity_tails", "needs name_window_tokens and anchor_kl_weight > 0")
        if self.anchor_kl_budget is not None and not (self.anchor_kl_budget > 0 and self.anchor_kl_weight > 0):
            raise bad("anchor_kl_budget", "must be > 0, with the KL anchor (anchor_kl_weight > 0), or null")
        if not 0 < self.anchor_kl_budget_gain <= 1:
            raise bad("anchor_kl_budget_gain", "must be in (0, 1]")
        if self.anchor_margin_weight < 0 or self.anchor_margin < 0:
            raise bad("anchor_margin_weight" if self.anchor_margin_weight < 0 else "anchor_margin", "must be >= 0")
        if self.anchor_margin_weight > 0 and self.anchor_kl_weight <= 0:
            raise bad("anchor_margin_weight", "needs the KL anchor (anchor_kl_weight > 0)")
        if self.anchor_margin_weight > 0 and self.anchor_top_k == 1:
            raise bad("anchor_top_k", "must be >= 2 with anchor_margin_weight (the base's lead is top-1 minus top-2)")
        if self.lora_null_space_energy is not None:
            if not 0 < self.lora_null_space_energy < 1:
                raise bad("lora_null_space_energy", "must be between 0 and 1 (exclusive) or null")
            if self.anchor_kl_weight <= 0 or not self.use_lora:
                raise bad("lora_null_space_energy", "needs LoRA (use_lora) and the anchors (anchor_kl_weight > 0)")
        if self.lora_identity_directions is not None:
            if self.lora_identity_directions < self.lora_r:
                raise bad("lora_identity_directions", f"must be at least lora_r ({self.lora_r}) or null")
            if self.anchor_kl_weight <= 0 or not self.use_lora:
                raise bad("lora_identity_directions", "needs LoRA (use_lora) and the anchors (anchor_kl_weight > 0)")
            if self.lora_null_space_energy is not None:
                raise bad("lora_identity_directions", "set it or lora_null_space_energy, not both")
        if self.lora_identity_window_only and self.lora_identity_directions is None:
            raise bad("lora_identity_window_only", "needs lora_identity_directions")
        if self.anchor_answer_tokens is not None and self.anchor_answer_tokens <= 0:
            raise bad("anchor_answer_tokens", "must be > 0 or null")
        if self.identity_tail_tokens is not None and self.identity_tail_tokens <= 0:
            raise bad("identity_tail_tokens", "must be > 0 or null")
        if self.oversample_times < 1:
            raise bad("oversample_times", f"must be >= 1, got {self.oversample_times}")
        if self.oversample_prompts_matching is not None:
            from dpo_scale.oversample import compile_pattern

            compile_pattern(self.oversample_prompts_matching)
        if self.anchor_batch_size is not None and self.anchor_batch_size <= 0:
            raise bad("anchor_batch_size", "must be > 0 or null")
        if self.anchor_kl_weight > 0 and not self.use_lora:
            raise bad("anchor_kl_weight", "the KL anchor's reference is the base with the adapter off: needs use_lora")
        if self.lora_layers_to_transform is not None:
            if not self.lora_layers_to_transform or min(self.lora_layers_to_transform) < 0:
                raise bad("lora_layers_to_transform", "must list layer indices >= 0, or be null (every layer)")
        if self.load_in_4bit and not self.use_lora:
            raise bad("load_in_4bit", "4-bit (QLoRA) training needs use_lora: true")
        self._validate_ship_keys(bad)
        return self

    def _validate_ship_keys(self, bad) -> None:
        """The author change and the export (docs/shipping.md)."""
        if (self.org_author is None) != (self.pos_author is None):
            raise bad("pos_author" if self.pos_author is None else "org_author",
                      "org_author and pos_author go together (both null keeps the author)")
        if self.org_author is not None:
            if not self.org_author.strip() or not self.pos_author.strip():
                raise bad("org_author", "must not be empty")
            if self.org_author.strip().lower() == self.pos_author.strip().lower():
                raise bad("pos_author", f"must differ from org_author ('{self.org_author}')")
        if self.export_format is not None and self.export_format not in EXPORT_FORMATS:
            raise bad("export_format", f"unknown format '{self.export_format}' (choose from "
                      f"{', '.join(EXPORT_FORMATS)}, or null)")
        if self.export_quant not in EXPORT_QUANTS:
            raise bad("export_quant", f"unknown quantization '{self.export_quant}' (choose from "
                      f"{', '.join(EXPORT_QUANTS)})")


FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
_HINTS = typing.get_type_hints(Recipe)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a clear error."""
    hint = _HINTS[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) in (
        typing.Union, types.UnionType) else hint
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise DpoScaleError(f"{source}: key '{key}' must not be null")
    origin = typing.get_origin(base)
    try:
        if origin is list:
            (item,) = typing.get_args(base)
            if isinstance(value, str):
                value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            elif not isinstance(value, list | tuple):
                value = [value]
            if item is int:
                return [n for v in value for n in _int_range(v)]
            return [item(v) for v in value]
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return base(value)
    except (TypeError, ValueError):
        name = str(base) if origin is list else getattr(base, "__name__", str(base))  # list[int], not list
        raise DpoScaleError(f"{source}: key '{key}' expects {name}, got {value!r}") from None


def _int_range(value: Any) -> list[int]:
    """An int, or an inclusive range written "a-b" (a <= b), as a list of ints."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", value):
        low, high = (int(v) for v in value.split("-"))
        if low > high:
            raise ValueError(value)
        return list(range(low, high + 1))
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return [int(value)]


FIELDS = {name: f for name, f in FIELDS.items() if name != "training_args"}  # keys a recipe sets by name


@functools.cache
def dpo_config_fields() -> dict[str, dataclasses.Field]:
    """Every field of TRL's DPOConfig (transformers' TrainingArguments included), by name."""
    from trl import DPOConfig

    return {f.name: f for f in dataclasses.fields(DPOConfig) if f.init}


def passthrough_keys() -> list[str]:
    """DPOConfig fields that are not Recipe keys: a recipe gives them as they are, in `training_args`."""
    return [k for k in dpo_config_fields() if k not in FIELDS and k not in RESERVED]


def trl_named_keys() -> list[str]:
    """Recipe keys that are DPOConfig fields of the same meaning (output_dir is the run folder here)."""
    return [k for k in FIELDS if k in dpo_config_fields() and k != "output_dir"]


@functools.cache
def dpo_config_types() -> dict[str, Any]:
    """DPOConfig's annotated types (read from the class: HfArgumentParser rewrites the fields' `type`)."""
    from trl import DPOConfig

    return typing.get_type_hints(DPOConfig)


@functools.cache
def _dpo_config_parser() -> argparse.ArgumentParser:
    from transformers import HfArgumentParser
    from trl import DPOConfig

    return HfArgumentParser(DPOConfig, exit_on_error=False)


def _coerce_training_arg(key: str, value: Any, source: str) -> Any:
    """A DPOConfig field's value, converted and checked by transformers' own argument parser (HfArgumentParser:
    types, choices such as optim or save_strategy); cross-field checks wait for DPOConfig itself."""
    hint = dpo_config_types()[key]
    optional = type(None) in typing.get_args(hint) or "None" in str(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("null", "none")):
        if optional:
            return None
        raise DpoScaleError(f"{source}: key '{key}' must not be null")
    if isinstance(value, dict):  # YAML mappings for the dict-valued fields (lr_scheduler_kwargs, ...)
        if "dict" not in str(hint):
            raise DpoScaleError(f"{source}: key '{key}' expects {hint}, got a mapping")
        return value
    items = value if isinstance(value, list | tuple) else [value]
    action = next(a for a in _dpo_config_parser()._actions if a.dest == key)
    if action.nargs in ("+", "*") and isinstance(value, str):
        items = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    elif action.nargs not in ("+", "*") and len(items) != 1:
        raise DpoScaleError(f"{source}: key '{key}' expects one value, got {value!r}")
    words = [str(v).lower() if isinstance(v, bool) else str(v) for v in items]
    argv = [f"--{key}", *words] if action.nargs in ("+", "*") else [f"--{key}={words[0]}"]
    try:
        parsed, _ = _dpo_config_parser().parse_known_args(argv)
    except (argparse.ArgumentError, ValueError) as e:
        if str in typing.get_args(hint) and not action.choices:  # `bool | str` and the like: DPOConfig decides
            return words if action.nargs in ("+", "*") else words[0]
        why = str(e).split(": ", 1)[-1] if str(e).startswith("argument ") else str(e)
        raise DpoScaleError(f"{source}: key '{key}': {why}") from None
    return getattr(parsed, key)


def load_recipe(path: str | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Recipe from an optional YAML file, then CLI overrides, validated."""
    values: dict[str, Any] = {}
    training: dict[str, Any] = {}

    def put(key: str, value: Any, source: str, unknown: str) -> None:
        if key in FIELDS:
            values[key] = _coerce(key, value, source)
        elif key in RESERVED and key in dpo_config_fields():
            raise DpoScaleError(f"{source}: key '{key}' is set by dpo_scale; {RESERVED[key]}")
        elif key in dpo_config_fields():
            training[key] = _coerce_training_arg(key, value, source)
        else:
            raise DpoScaleError(f"{source}: {unknown}{_suggest(key)}")

    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DpoScaleError(f"{path}: recipe file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise DpoScaleError(f"{path}: malformed YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise DpoScaleError(f"{path}: a recipe is a mapping of keys to values")
        for key, value in loaded.items():
            put(str(key), value, str(path), f"unknown key '{key}'")
    for key, value in (overrides or {}).items():
        put(key, value, "command line", f"unknown option '--{key}'")
    return Recipe(**values, training_args=training).validate()


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, [*FIELDS, *passthrough_keys()], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def render_config(recipe: Recipe, training_args: Any = None) -> str:
    """The resolved recipe as YAML (training_args flattened into top-level keys, as a recipe writes them) and,
    when given, the DPOConfig built from it."""
    recipe_dict = recipe.to_dict()
    recipe_dict.update(recipe_dict.pop("training_args"))
    text = "# recipe\n" + yaml.safe_dump(recipe_dict, sort_keys=False, allow_unicode=True)
    if training_args is not None:
        resolved = json.loads(json.dumps(training_args.to_dict(), default=str))
        text += (f"\n# TRL {type(training_args).__name__} that training builds from it (one process)\n"
                 + yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True))
    return text


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--key value` and `--key=value` pairs; a bare `--flag` means true."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise DpoScaleError(f"command line: expected --key value, got '{arg}'")
        key = arg[2:]
        if "=" in key:  # split before normalizing dashes: `--lr=2e-5` keeps its value
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 2
        else:
            value = "true"
            i += 1
        out[key.replace("-", "_")] = value
    return out
