"""`dpo-scale export --format gguf`: the merged model as one GGUF file (weights, tokenizer, chat template) for
llama.cpp and Ollama, written with the `gguf` package.

Supported: Llama-shaped (SmolLM2, Llama 2/3 without rope scaling) and Qwen2-shaped models with a byte-level
BPE tokenizer. The layout is llama.cpp's (convert_hf_to_gguf.py): tensor names from gguf's own name table,
1-D tensors (norms, biases) kept in F32, and for llama the rows of q_proj/k_proj permuted per head into
llama.cpp's rotary layout. transformers' GGUF loader undoes exactly that permutation for the "llama"
architecture and none for "qwen2" (LlamaTensorProcessor in transformers/modeling_gguf_pytorch_utils.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_scale.config import EXPORT_FORMATS, EXPORT_QUANTS, Recipe
from dpo_scale.errors import DpoScaleError
from dpo_scale.io import atomic_path

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# transformers architecture -> gguf architecture name (also general.architecture in the file)
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def export_path(recipe: Recipe) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", recipe.pos_name.lower()).strip("-") or "model"
    return Path(recipe.output_dir) / "export" / f"{slug}-{recipe.export_quant}.gguf"


def export(recipe: Recipe, fmt: str | None = None) -> Path:
    """Export the run's merged model; the file goes to <output_dir>/export/."""
    fmt = fmt or recipe.export_format or "gguf"
    if fmt not in EXPORT_FORMATS:
        raise DpoScaleError(f"export: unknown format '{fmt}' (choose from {', '.join(EXPORT_FORMATS)})")
    merged = recipe.merged_path
    if not (merged / "config.json").is_file():
        raise DpoScaleError(f"{merged}: no merged model to export; run `dpo-scale merge` first")
    out = write_gguf(merged, export_path(recipe), recipe.export_quant, name=recipe.pos_name)
    from dpo_scale.model_card import write_model_card

    if (merged / "README.md").is_file():
        write_model_card(recipe, "merged")  # the card lists the export
    return out


def _gguf_arch(config: dict, model_dir: Path) -> str:
    archs = config.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        raise DpoScaleError(f"{model_dir / 'config.json'}: GGUF export supports {', '.join(ARCHITECTURES)}; "
                            f"this model is {', '.join(archs) or config.get('model_type', 'unknown')}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise DpoScaleError(f"{model_dir / 'config.json'}: rope type '{rope_type}' is not supported by the GGUF "
                            "export (only plain RoPE)")
    if config.get("use_sliding_window"):
        raise DpoScaleError(f"{model_dir / 'config.json'}: sliding-window attention is not supported by the GGUF "
                            "export")
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    if arch == "qwen2" and config.get("head_dim", hidden // heads) != hidden // heads:
        raise DpoScaleError(f"{model_dir / 'config.json'}: head_dim must be hidden_size / num_attention_heads")
    return arch


def _pre_tokenizer(pre: dict | None, where: Path) -> str:
    """llama.cpp's name for the tokenizer's split rule; an unknown rule is refused (llama.cpp would split
    text differently from the model's own tokenizer)."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    def byte_level(p: dict, regex: bool) -> bool:
        return p.get("type") == "ByteLevel" and bool(p.get("use_regex", True)) == regex

    parts = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre or {}]
    if len(parts) == 1 and byte_level(parts[0], True):
        return "gpt-2"
    if (len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
            and byte_level(parts[1], True)):
        return "smollm"
    if (len(parts) == 2 and parts[0].get("type") == "Split" and parts[0].get("pattern", {}).get("Regex") == QWEN2_SPLIT
            and byte_level(parts[1], False)):
        return "qwen2"
    raise DpoScaleError(f"{where}: pre-tokenizer {json.dumps(pre)[:200]} has no llama.cpp equivalent known to the "
                        "GGUF export (supported: GPT-2 byte-level, SmolLM's, Qwen2's)")


def _add_tokenizer(writer, model_dir: Path, vocab_size: int) -> None:
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise DpoScaleError(f"{model_dir}: GGUF export needs a fast tokenizer (tokenizer.json)")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    if spec["model"].get("type") != "BPE":
        raise DpoScaleError(f"{tokenizer_file}: GGUF export supports byte-level BPE tokenizers, "
                            f"this one is {spec['model'].get('type')}")
    pre = _pre_tokenizer(spec.get("pre_tokenizer"), tokenizer_file)

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    if max(by_id) >= vocab_size:
        raise DpoScaleError(f"{tokenizer_file}: token id {max(by_id)} is past the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):  # embedding rows without a token get a placeholder, as llama.cpp writes them
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        token_id = getattr(tokenizer, f"{token}_token_id")
        if token_id is not None:
            add(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one, then the others as llama.cpp lists them
        template = [{"name": k, "template": v} for k, v in template.items()]
    if template:
        writer.add_chat_template(template)


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for q/k rows (convert_hf_to_gguf.py LlamaModel.permute); transformers'
    LlamaTensorProcessor._reverse_permute_weights is its inverse."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_tensors(model_dir: Path, arch: str, config: dict):
    """(gguf name, float32 array) for every weight of the model, in llama.cpp's layout."""
    import gguf
    import torch
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise DpoScaleError(f"{model_dir}: no .safetensors weights to export")
    layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), layers)
    tied = config.get("tie_word_embeddings", False)
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                if tied and key == "lm_head.weight":
                    continue  # tied to the embedding: llama.cpp reads token_embd for the output
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise DpoScaleError(f"{file}: tensor '{key}' has no GGUF name for architecture '{arch}'")
                data = f.get_tensor(key).to(torch.float32).numpy()
                if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
                    heads = config["num_attention_heads"] if ".attn_q." in name else config.get(
                        "num_key_value_heads", config["num_attention_heads"])
                    data = _permute(data, heads)
                yield name, data


def encode_tensor(data: np.ndarray, quant: str) -> tuple[np.ndarray, object]:
    """The tensor as stored: 1-D ones (norms, biases) in F32, matrices in F16 or Q8_0 (F16 where a row does not
    fill whole Q8_0 blocks of 32), as llama.cpp stores them."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType
    if data.ndim == 1:
        return data.astype(np.float32), qtype.F32
    if quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype.Q8_0][0] == 0:
        return gguf.quants.quantize(data, qtype.Q8_0), qtype.Q8_0
    return data.astype(np.float16), qtype.F16


def write_gguf(model_dir: Path, out: Path, quant: str = "f16", name: str | None = None) -> Path:
    """Write the transformers model in `model_dir` as one GGUF file at `out` (atomically)."""
    import gguf

    if quant not in EXPORT_QUANTS:
        raise DpoScaleError(f"config key 'export_quant': unknown quantization '{quant}' "
                            f"(choose from {', '.join(EXPORT_QUANTS)})")
    started = time.time()
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    arch = _gguf_arch(config, model_dir)
    rope = config.get("rope_parameters") or {}
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_name(name or model_dir.name)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(config["num_attention_heads"])
        writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
        writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config["hidden_size"] // config["num_attention_heads"]:  # llama.cpp reads it from here
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, model_dir, config["vocab_size"])
        for tensor_name, data in gguf_tensors(model_dir, arch, config):
            stored, qtype = encode_tensor(data, quant)
            writer.add_tensor(tensor_name, stored, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    log.info("GGUF (%s) written to %s (%.0f MB, %.1f s)", quant, out, out.stat().st_size / 2**20,
             time.time() - started)
    return out
