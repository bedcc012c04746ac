"""dpo_scale/lora_speed.py: peft's per-layer input cast is skipped, and under autocast the loss and gradients stay
what they were (the adapter matmuls ran in bf16 either way)."""

from contextlib import contextmanager

import pytest
import torch

from dpo_scale.lora_speed import skip_lora_input_cast


def lora_model(tiny_model: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # peft upcasts adapters
    return model


@contextmanager
def activation_upcasts(widths: set[int]):
    """Record every `Tensor.to(float32)` of a bf16 activation (batch, seq, width) with width in `widths`:
    the copies peft's input cast makes (it calls x.to(dtype=...))."""
    seen: list[tuple[int, ...]] = []
    original = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        target = kwargs.get("dtype", args[0] if args else None)
        if target == torch.float32 and self.dtype == torch.bfloat16 and self.dim() == 3 and self.shape[-1] in widths:
            seen.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    torch.Tensor.to = recording_to
    try:
        yield seen
    finally:
        torch.Tensor.to = original


def loss_and_grads(model, ids: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_skipping_the_cast_removes_the_copies_and_keeps_loss_and_gradients(tiny_model):
    model = lora_model(tiny_model)
    widths = {model.config.hidden_size, model.config.intermediate_size}
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with activation_upcasts(widths) as before:
        loss_cast, grads_cast = loss_and_grads(model, ids)
    layers = sum(1 for m in model.modules() if hasattr(m, "lora_A"))
    assert layers > 0

    assert skip_lora_input_cast(model) == layers
    assert skip_lora_input_cast(model) == 0  # already off
    with activation_upcasts(widths) as after:
        loss_fast, grads_fast = loss_and_grads(model, ids)
    # exactly one fp32 copy of the input per LoRA layer is gone (RMSNorm's own fp32 upcasts remain)
    assert len(before) - len(after) == layers
    assert loss_fast == pytest.approx(loss_cast, rel=1e-3)
    for name, grad in grads_cast.items():
        assert torch.allclose(grads_fast[name], grad, rtol=5e-2, atol=1e-4), name


def tied_lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           layers_to_transform=[1], init_lora_weights=False))


def test_frozen_linears_stored_in_bf16_give_the_same_autocast_step():
    from dpo_scale.lora_speed import store_frozen_linears_in

    model = tied_lora_model()
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    loss_cast_each_call, grads_cast_each_call = loss_and_grads(model, ids)
    frozen_linears = sum(1 for m in model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad)

    assert store_frozen_linears_in(model, torch.bfloat16) == frozen_linears
    base = model.get_base_model()
    assert base.lm_head.weight.dtype == torch.bfloat16
    assert base.model.embed_tokens.weight.dtype == torch.float32  # the tied embedding got untied, stays fp32
    assert base.model.norm.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # the adapter
    loss_stored, grads_stored = loss_and_grads(model, ids)
    # autocast rounds the fp32 weights to the same bf16 values on every call: the same numbers
    assert loss_stored == loss_cast_each_call
    for name, grad in grads_cast_each_call.items():
        assert torch.equal(grads_stored[name], grad), name
    assert store_frozen_linears_in(model, torch.bfloat16) == 0  # nothing left in fp32
