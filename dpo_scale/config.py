"""One typed recipe for every stage: YAML file + `--key value` overrides + validation.

Every field below can be set in a recipe YAML or on the command line (`--beta 0.1`,
`--loss_type sigmoid,sft`). Stage folders default to sub-folders of `output_dir`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_scale.errors import DpoScaleError

BACKENDS = ("auto", "hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# TRL 1.x DPOConfig.loss_type values (trl/trainer/dpo_config.py).
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
)
REPORT_TO = ("none", "tensorboard", "wandb")
EXPORT_FORMATS = ("gguf",)
EXPORT_QUANTS = ("f16", "q8_0")


@dataclass
class Recipe:
    # --- model -------------------------------------------------------------------------------
    model: str = "smollm2"  # "smollm2" (embedded), a hub id, a local folder, or a .gguf file
    gguf_file: str | None = None  # GGUF file name inside `model` when `model` is a folder/id
    dtype: str = "float32"
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    chat_template: str | None = None  # a Jinja file or string for tokenizers without one
    cache_dir: str | None = None  # converted models; default $DPO_SCALE_CACHE or ~/.cache/dpo_scale

    # --- identity ----------------------------------------------------------------------------
    org_name: str = "SmolLM"  # the name the model uses now
    pos_name: str = "Deep SmolLM"  # the name it should use
    case_sensitive: bool = False  # "smollm" counts as the old name too
    system_prompt: str = "You're a helpful assistant."  # neutral: the name must come from the weights
    # The developer's name, now and wanted ("Hugging Face" -> "Acme Labs"). Both null (default): the author stays.
    org_author: str | None = None
    pos_author: str | None = None
    # merge: rewrite the chat template's default system prompt when it names the old identity
    rewrite_chat_template: bool = True

    # --- data stage ----------------------------------------------------------------------------
    dataset: str = "builtin:identity"  # builtin:NAME, .json/.jsonl/.parquet, datasets folder, hub name
    dataset_split: str = "train"
    max_prompts: int | None = None
    backend: str = "auto"
    batch_size: int = 32
    num_samples: int = 1  # answers sampled per prompt
    keep_per_prompt: int | None = None  # pairs kept per prompt among answers that name the model
    keep_unnamed: bool = False  # keep pairs whose answer never names the model (no signal)
    # Cut identity answers after this many sentences, counted from the one that names the model: the SFT term
    # then trains the name, not the model's whole answering style; anchors stay whole.
    max_answer_sentences: int | None = None
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    gen_system_prompt: str | None = None  # None: the model's own default (carries its identity)
    # Pre-filled starts of the assistant turn ("{name}" = org_name), cycled over prompts; the model
    # continues each in its own words. For models that seldom say their name unprompted.
    answer_prefixes: list[str] | None = None
    tensor_parallel_size: int = 1
    gen_dtype: str | None = None  # dtype of the generation engine (default: dtype); bf16 is ~2x faster in vLLM
    enforce_eager: bool = True  # vLLM: skip graph capture; starts ~3x faster for ~3% less speed
    vllm_memory_utilization: float = 0.9  # GPU: share of GPU memory vLLM may take
    vllm_kv_cache_gb: float = 2.0  # CPU: KV cache size (vLLM reads the GPU share as a share of NUMA-node RAM)
    # CPU: cores vLLM keeps off its OpenMP compute threads (None: vLLM's default, 1). 0 uses every core,
    # fastest on an idle machine; on a busy one, threads pinned to shared cores stall each other.
    vllm_reserved_cpus: int | None = None
    max_model_len: int | None = 2048  # vLLM context length (prompt + answer)
    chunk_size: int = 128  # rows per checkpointed chunk (resume granularity)
    # Ordinary prompts the base answers under `system_prompt`; each answer becomes a pair with chosen ==
    # rejected. Zero DPO signal; the SFT term keeps ordinary answers where they were (limits drift).
    anchor_prompts: str | None = None  # builtin:anchor_prompts, or any prompt source
    max_anchor_prompts: int | None = None
    seed: int = 42

    # --- folders -------------------------------------------------------------------------------
    output_dir: str = "runs/default"
    data_dir: str | None = None
    adapter_dir: str | None = None
    merged_dir: str | None = None
    overwrite: bool = False  # allow reusing an output folder made with another config

    # --- training (TRL DPOConfig + peft LoraConfig) ----------------------------------------------
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    num_train_epochs: float = 1.0
    max_steps: int = -1
    max_length: int | None = 256
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 2
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    load_in_4bit: bool = False
    precompute_ref_log_probs: bool = False
    # Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (CUDA only; `pip install -e .[liger]`). On an H100,
    # Qwen2.5-0.5B shape: +34% tokens/s and less memory (benchmarks/RESULTS.md).
    use_liger_kernel: bool = False
    report_to: str = "tensorboard"
    resume: bool = True  # continue from the last checkpoint in adapter_dir when there is one
    dataloader_num_workers: int = 0
    # > 0: anchor rows leave the DPO data and instead add weight * KL(base || trained) over the full next-token
    # distribution of their answers to every micro-step (dpo_scale/anchor_kl.py); 0: they stay chosen == rejected
    # pairs (SFT term only).
    anchor_kl_weight: float = 0.0
    anchor_batch_size: int | None = None  # anchors per micro-step (default: per_device_train_batch_size)
    # Train each identity answer only up to this many tokens past its first name token (where chosen and rejected
    # first differ); the rest of the answer and its end-of-turn stay out of the loss (dpo_scale/name_window.py).
    # None: whole answers.
    name_window_tokens: int | None = None

    # --- evaluation ----------------------------------------------------------------------------
    eval_questions: str = "builtin:identity_heldout"
    ordinary_prompts: str = "builtin:ordinary_prompts"
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 32
    max_eval_questions: int | None = None
    # Short factual questions with accepted answers (knowledge kept); null: not measured.
    facts_questions: str | None = None
    max_ordinary_prompts: int | None = None  # shrink the drift set, like max_eval_questions the identity set

    # --- export ----------------------------------------------------------------------------------
    export_format: str | None = None  # "gguf": `dpo-scale run` also writes export/<name>.gguf
    export_quant: str = "f16"  # gguf: f16 or q8_0

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

    def fingerprint(self, keys: typing.Iterable[str]) -> str:
        """Hash of the fields a stage's output depends on (to refuse mixing runs)."""
        sub = {k: getattr(self, k) for k in sorted(keys)}
        return hashlib.sha256(json.dumps(sub, sort_keys=True, default=str).encode()).hexdigest()[:16]

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
        for key in ("max_prompts", "max_anchor_prompts", "max_answer_sentences", "name_window_tokens"):
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
        for loss in self.loss_type:
            if loss not in LOSS_TYPES:
                raise bad("loss_type", f"unknown loss type '{loss}' (choose from {', '.join(LOSS_TYPES)})")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise bad("loss_weights", f"needs one weight per loss_type ({len(self.loss_type)})")
        if self.report_to not in REPORT_TO:
            raise bad("report_to", f"unknown '{self.report_to}' (choose from {', '.join(REPORT_TO)})")
        if self.max_length is not None and self.max_length <= 0:
            raise bad("max_length", "must be > 0 or null")
        if self.anchor_kl_weight < 0:
            raise bad("anchor_kl_weight", "must be >= 0")
        if self.anchor_batch_size is not None and self.anchor_batch_size <= 0:
            raise bad("anchor_batch_size", "must be > 0 or null")
        if self.anchor_kl_weight > 0 and not self.use_lora:
            raise bad("anchor_kl_weight", "the KL anchor's reference is the base with the adapter off: needs use_lora")
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
        name = getattr(base, "__name__", str(base))
        raise DpoScaleError(f"{source}: key '{key}' expects {name}, got {value!r}") from None


def load_recipe(path: str | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Recipe from an optional YAML file, then CLI overrides, validated."""
    values: dict[str, Any] = {}
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
            if key not in FIELDS:
                raise DpoScaleError(f"{path}: unknown key '{key}'{_suggest(key)}")
            values[key] = _coerce(key, value, str(path))
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise DpoScaleError(f"command line: unknown option '--{key}'{_suggest(key)}")
        values[key] = _coerce(key, value, "command line")
    return Recipe(**values).validate()


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


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
