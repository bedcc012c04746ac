"""The GGUF export of the real SmolLM2, read back by transformers: the rewritten chat template travels in the
file, the tokenizer encodes alike, and "What is your name?" gets the same greedy answer as from the safetensors
model. (Whether that answer names the new name is the trained weights' job, measured by `dpo-scale eval`: the
untrained base under the rewritten prompt answered "My name is Kael. ...".)"""

from pathlib import Path

import pytest

from dpo_scale.chat_template import default_prompt, identity_swap, rewrite_tokenizer_template


def greedy(model, tokenizer, max_new_tokens: int = 16) -> str:
    import torch

    ids = tokenizer(default_prompt(tokenizer), return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smollm2_gguf_answers_like_the_safetensors_model(smollm2, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_scale.export_gguf import write_gguf

    # A merged folder as `dpo-scale merge` writes it, without training: SmolLM2's weights and its tokenizer with
    # the template rewritten to the new identity.
    folder = tmp_path / "merged"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (folder / name).symlink_to(Path(smollm2) / name)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert rewrite_tokenizer_template(tokenizer, identity_swap("SmolLM", "Deep SmolLM"))
    tokenizer.save_pretrained(folder)

    out = write_gguf(folder, tmp_path / "deep-smollm-f16.gguf", "f16", name="Deep SmolLM")
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert "You are a helpful AI assistant named Deep SmolLM, trained by Hugging Face" in default_prompt(gguf_tokenizer)
    assert gguf_tokenizer(default_prompt(tokenizer))["input_ids"] == tokenizer(default_prompt(tokenizer))["input_ids"]

    original = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    ids = tokenizer(default_prompt(tokenizer), return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        a, b = loaded(ids).logits, original(ids).logits
    # f16 keeps 11 significant bits per weight (see tests/test_ship.py for the tolerance)
    assert (a - b).abs().max() <= 2e-3 * b.abs().max()
    answer = greedy(original, tokenizer)
    # f16 storage changes logits by ~1e-3 relative: greedy text over 16 tokens stays the same
    assert answer.strip() and greedy(loaded, gguf_tokenizer) == answer
