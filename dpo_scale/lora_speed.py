"""Skip peft's per-layer input cast under mixed precision: a full copy of the activations per adapted layer.

peft upcasts LoRA adapters to fp32 (autocast_adapter_dtype=True, the default) and, in every LoRA layer's forward,
casts the layer's input to the adapter's dtype before lora_A (`BaseTunerLayer._cast_input_dtype`). Under bf16
autocast the adapter matmul then casts that fp32 copy straight back to bf16. With "all-linear" targets that is
two full-size copies of every linear layer's input per forward pass, plus their backward: measured on an H100
(Qwen2.5-0.5B shape, LoRA r16 all-linear, batch 32 x 512 tokens) the copy kernels were ~20% of the step's GPU time
(benchmarks/gpu_step.py --profile). Autocast already runs lora_A/lora_B in bf16 with fp32 master weights, so the
cast buys nothing there. peft's own switch for this is `cast_input_dtype_enabled` (peft.helpers.
disable_input_dtype_casting is its context-manager form); we set it for the whole run.
"""

from __future__ import annotations


def autocast_active(trainer) -> bool:
    """Mixed precision through autocast (not DeepSpeed, which casts the whole model, adapters included)."""
    accelerator = trainer.accelerator
    return accelerator.mixed_precision in ("bf16", "fp16") and accelerator.state.deepspeed_plugin is None


def skip_lora_input_cast(model) -> int:
    """Turn off peft's input cast in every LoRA layer of `model`; returns how many layers were changed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and getattr(module, "cast_input_dtype_enabled", False):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


def speed_up_lora(trainer) -> int:
    """skip_lora_input_cast where it is safe: only under autocast (without it an fp32 adapter would meet a bf16
    input and the matmul would fail on mixed dtypes)."""
    return skip_lora_input_cast(trainer.model) if autocast_active(trainer) else 0


def autocast_dtype(trainer):
    """The dtype autocast runs the matmuls in, or None without autocast (see autocast_active)."""
    import torch

    if not autocast_active(trainer):
        return None
    return torch.bfloat16 if trainer.accelerator.mixed_precision == "bf16" else torch.float16


def store_frozen_linears_in(model, dtype) -> int:
    """Store each frozen fp32 `nn.Linear` weight (and bias) of `model` in `dtype`, once; returns how many layers.

    Under autocast every linear layer casts its fp32 weight to the autocast dtype on each call, and autocast caches
    the cast only for weights that require grad: the frozen base's weights are cast again in every forward pass
    (policy, reference and anchor passes alike). Stored in that dtype they are used as they are. The matmuls see
    the same rounded values either way, so the step computes the same numbers (tests/test_train.py checks the
    losses); norms and embeddings stay fp32 as autocast keeps them. A weight tied to an embedding (SmolLM2's
    lm_head) gets a copy of its own, so that the embedding stays fp32. The exact type only: 4-bit layers and
    peft's adapter layers are left alone."""
    import torch

    embeddings = {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    changed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or weight.requires_grad or weight.dtype != torch.float32:
            continue
        if weight.data_ptr() in embeddings:
            module.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
        else:
            weight.data = weight.data.to(dtype)
        if module.bias is not None and not module.bias.requires_grad:
            module.bias.data = module.bias.data.to(dtype)
        changed += 1
    return changed


def store_frozen_weights_for_autocast(trainer) -> int:
    """store_frozen_linears_in the autocast dtype, where training runs under autocast (0 elsewhere)."""
    dtype = autocast_dtype(trainer)
    return store_frozen_linears_in(trainer.model, dtype) if dtype is not None else 0
