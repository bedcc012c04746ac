"""Stage manifests and fingerprints: what shaped each stage's output, in one place.

A stage's fingerprint is the recipe keys it reads (with their values), the hashes of its input files and
the identity of the base model. Each stage writes it into its manifest (the file that marks it complete);
`dpo-scale run` compares it with the current recipe to skip, refuse or redo the stage (docs/reruns.md),
and report.md reads every setting it prints from these manifests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_scale.io import read_json

if TYPE_CHECKING:
    from dpo_scale.config import Recipe

STAGES = ("data", "train", "merge", "eval")

_MODEL_KEYS = ("model", "gguf_file", "dtype", "chat_template")

# The generated answers (data/parts) depend on these: other values must not mix with old chunks.
GENERATION_KEYS = (
    *_MODEL_KEYS, "gen_dtype", "dataset", "dataset_split", "max_prompts", "num_samples", "temperature", "top_p",
    "max_new_tokens", "gen_system_prompt", "chunk_size", "seed", "answer_prefixes", "org_name", "anchor_prompts",
    "max_anchor_prompts", "anchor_max_new_tokens", "system_prompt",
)
# The pairs are built from the answers with these on top.
DATA_KEYS = (*GENERATION_KEYS, "pos_name", "case_sensitive", "keep_per_prompt", "keep_unnamed",
             "max_answer_sentences", "org_author", "pos_author")
TRAIN_KEYS = (
    *_MODEL_KEYS, "org_name", "pos_name", "system_prompt", "beta", "loss_type", "loss_weights", "learning_rate",
    "lr_scheduler_type", "warmup_ratio", "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "max_length", "bf16", "use_lora", "lora_r", "lora_alpha", "lora_dropout",
    "lora_target_modules", "lora_layers_to_transform", "load_in_4bit", "seed", "anchor_kl_weight",
    "anchor_batch_size", "anchor_top_k", "hold_identity_tails", "identity_tail_tokens", "anchor_answer_tokens",
    "anchor_margin", "anchor_margin_weight", "anchor_kl_budget", "anchor_kl_budget_gain", "lora_null_space_energy",
    "lora_identity_directions", "lora_identity_window_only",
    "oversample_prompts_matching", "oversample_times", "name_window_tokens", "precompute_ref_log_probs",
    "training_args",
)
MERGE_KEYS = (*_MODEL_KEYS, "org_name", "pos_name", "org_author", "pos_author", "rewrite_chat_template")
EVAL_KEYS = (
    *_MODEL_KEYS, "org_name", "pos_name", "case_sensitive", "system_prompt", "eval_questions", "ordinary_prompts",
    "eval_max_new_tokens", "max_eval_questions", "facts_questions", "max_ordinary_prompts",
)
STAGE_KEYS = {"generation": GENERATION_KEYS, "data": DATA_KEYS, "train": TRAIN_KEYS, "merge": MERGE_KEYS,
              "eval": EVAL_KEYS}


def manifest_path(stage: str, recipe: Recipe) -> Path:
    """The file whose presence marks the stage complete; it holds the stage's fingerprint."""
    return {
        "data": recipe.data_path / "manifest.json",
        "train": recipe.adapter_path / "train_manifest.json",
        "merge": recipe.merged_path / "merge_manifest.json",
        "eval": Path(recipe.output_dir) / "eval.json",
    }[stage]


def read_manifest(stage: str, recipe: Recipe) -> dict | None:
    path = manifest_path(stage, recipe)
    return read_json(path) if path.is_file() else None


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _source_hash(source: str | None) -> str | None:
    """Hash of a prompt source that is a file or folder here (builtin:NAME included); None for a hub name."""
    if not source:
        return None
    if source.startswith("builtin:"):
        from dpo_scale.prompts import builtin_path

        path = builtin_path(source.split(":", 1)[1])
    else:
        path = Path(source)
    if path.is_file():
        return file_hash(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}:{file_hash(f)}".encode())
        return digest.hexdigest()[:16]
    return None


def model_identity(recipe: Recipe) -> dict[str, Any]:
    """The base model as named, plus name and size of its files when it is local (cheap; no weights read)."""
    from dpo_scale.models import EMBEDDED

    path = Path(recipe.model)
    files: dict[str, int] = {}
    if recipe.model in EMBEDDED:
        from importlib.metadata import PackageNotFoundError, version

        package = EMBEDDED[recipe.model][0].replace("_", "-")
        try:
            files = {package: version(package)}  # type: ignore[dict-item]
        except PackageNotFoundError:
            files = {}
    elif path.is_file():
        files = {path.name: path.stat().st_size}
    elif path.is_dir():
        files = {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}
    return {"model": recipe.model, "gguf_file": recipe.gguf_file, "files": files}


def stage_inputs(stage: str, recipe: Recipe) -> dict[str, str | None]:
    """Hashes of the files the stage reads (those that exist now)."""
    if stage in ("generation", "data"):
        return {"dataset": _source_hash(recipe.dataset), "anchor_prompts": _source_hash(recipe.anchor_prompts)}
    if stage == "train":
        files = {name: recipe.data_path / name for name in ("pairs.jsonl", "anchors.jsonl")}
        return {name: file_hash(path) if path.is_file() else None for name, path in files.items()}
    if stage == "merge":
        weights = recipe.adapter_path / "adapter_model.safetensors"
        return {"adapter": file_hash(weights) if weights.is_file() else None}
    if stage == "eval":
        # The merged model is identified by the fingerprint of the merge that made it (hashing GBs of
        # weights on every rerun would cost more than the check is worth).
        merged = read_manifest("merge", recipe)
        fp = (merged or {}).get("fingerprint")
        return {"merged": fp.get("hash") if isinstance(fp, dict) else None,
                "eval_questions": _source_hash(recipe.eval_questions),
                "ordinary_prompts": _source_hash(recipe.ordinary_prompts),
                "facts_questions": _source_hash(recipe.facts_questions)}
    raise ValueError(f"unknown stage {stage!r}")


def fingerprint(stage: str, recipe: Recipe) -> dict[str, Any]:
    """{"hash", "keys": {key: value}, "inputs": {name: hash}, "model": {...}, "precision": {...}} for the stage
    under `recipe` ("generation": the part of the data stage that the generated answers in data/parts depend
    on). Values are returned as JSON gives them back, so a stored fingerprint compares equal to a fresh one."""
    from dpo_scale.precision import stage_precision

    # `dtype: auto` resolves per host: the precision the stage runs in is part of what shapes its output.
    precision = stage_precision(recipe, "generate" if stage in ("generation", "data") else stage, quiet=True)
    record = {
        "keys": {k: getattr(recipe, k) for k in STAGE_KEYS[stage]},
        "inputs": stage_inputs(stage, recipe),
        "model": model_identity(recipe),
        "precision": {"dtype": precision.dtype, "autocast_bf16": precision.autocast_bf16},
    }
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return {"hash": hashlib.sha256(blob).hexdigest()[:16], **json.loads(json.dumps(record, default=str))}


def changes(old: Any, new: dict[str, Any]) -> list[str]:
    """What differs between a manifest's fingerprint and a fresh one, as short phrases ([] = the same)."""
    if not isinstance(old, dict) or "keys" not in old:
        return ["written by an older dpo_scale without a stage fingerprint"]
    if old.get("hash") == new["hash"]:
        return []
    out = [f"{k} {_show(old['keys'].get(k))} -> {_show(v)}" for k, v in new["keys"].items()
           if k in old["keys"] and old["keys"][k] != v]
    out += [f"{k} (new key)" for k in new["keys"] if k not in old["keys"]]
    out += [f"input {k} changed" for k, v in new["inputs"].items() if old.get("inputs", {}).get(k) != v]
    if old.get("model") != new["model"]:
        out.append("base model files changed")
    if old.get("precision") != new["precision"]:
        out.append(f"precision {_show(old.get('precision'))} -> {_show(new['precision'])}")
    return out or ["fingerprint differs"]


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else repr(value)


def recorded(manifest: dict | None, key: str, default: Any = None) -> Any:
    """A recipe value as the stage that wrote `manifest` used it."""
    fp = (manifest or {}).get("fingerprint")
    if isinstance(fp, dict) and key in fp.get("keys", {}):
        return fp["keys"][key]
    return (manifest or {}).get("recipe", {}).get(key, default)
