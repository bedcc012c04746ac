"""Merge a LoRA adapter into its base weights and save a standalone model (safetensors + tokenizer
+ chat template + model card) that plain `AutoModelForCausalLM.from_pretrained` loads.

With `rewrite_chat_template` (default) the chat template's default system prompt speaks the new identity
(dpo_scale/chat_template.py), in the merged folder and in the adapter folder alike."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dpo_scale import manifests
from dpo_scale.chat_template import identity_swap, rendered_default, rewrite_folder_template, rewrite_tokenizer_template
from dpo_scale.config import Recipe
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import atomic_path, empty_tensors, read_json, write_json
from dpo_scale.model_card import write_model_card

log = logging.getLogger(__name__)


def check_adapter(adapter: Path) -> dict:
    config = adapter / "adapter_config.json"
    weights = adapter / "adapter_model.safetensors"
    if not config.is_file() or not weights.is_file():
        raise DpoScaleError(f"{adapter}: not a peft adapter folder (needs adapter_config.json and "
                            "adapter_model.safetensors); train one with `dpo-scale train`")
    keys, empty = empty_tensors(weights)
    if not keys or empty:
        raise DpoScaleError(f"{weights}: adapter is empty ({len(empty)} of {len(keys)} tensors have no "
                            "elements, e.g. saved under ZeRO-3 without gathering); refusing to merge")
    return read_json(config)


def merge(recipe: Recipe) -> Path:
    """Load base (unquantized, in recipe.dtype) + adapter, merge_and_unload, save atomically."""
    started = time.time()
    adapter, out = recipe.adapter_path, recipe.merged_path
    adapter_config = check_adapter(adapter)  # before the heavy imports: a bad folder fails at once

    import torch
    from peft import PeftModel

    from dpo_scale.models import load_model, load_tokenizer, resolve_model
    from dpo_scale.precision import stage_precision

    base_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    manifest = adapter / "train_manifest.json"
    trained_4bit = read_json(manifest).get("recipe", {}).get("load_in_4bit") if manifest.is_file() else False
    precision = stage_precision(recipe, "merge")
    if trained_4bit or recipe.load_in_4bit:
        log.warning("the adapter was trained on a 4-bit (QLoRA) base; merging onto the unquantized base in %s: "
                    "outputs can differ slightly from the 4-bit model the adapter was trained against",
                    precision.dtype)
    tokenizer = load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_path,
                               recipe.chat_template)
    template = _rewrite_templates(recipe, tokenizer, adapter)
    base = load_model(base_path, precision.dtype, device="cpu")
    model = PeftModel.from_pretrained(base, str(adapter))
    with torch.no_grad():
        merged = model.merge_and_unload()
    with atomic_path(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "merge_manifest.json", {
            "stage": "merge", "base_model": recipe.model, "base_model_path": base_path, "adapter": str(adapter),
            "lora_r": adapter_config.get("r"), "precision": precision.as_dict(),
            "from_4bit_adapter": bool(trained_4bit), "chat_template": template,
            "seconds": round(time.time() - started, 2), "fingerprint": manifests.fingerprint("merge", recipe),
        })
        write_model_card(recipe, "merged", tmp)
    write_model_card(recipe, "adapter")  # replaces the card peft wrote
    log.info("merged model saved to %s", out)
    return out


def _rewrite_templates(recipe: Recipe, tokenizer, adapter: Path) -> dict:
    """Point the tokenizer's (and the adapter folder's) default system prompt at the new identity."""
    before = rendered_default(tokenizer)
    if not recipe.rewrite_chat_template:
        return {"rewritten": False, "default_before": before, "default_after": before}
    swap = identity_swap(recipe.org_name, recipe.pos_name, recipe.case_sensitive, recipe.org_author,
                         recipe.pos_author)
    rewritten = rewrite_tokenizer_template(tokenizer, swap)
    rewrite_folder_template(adapter, swap)
    return {"rewritten": rewritten, "default_before": before, "default_after": rendered_default(tokenizer)}
