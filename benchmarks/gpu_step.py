"""DPO + LoRA training-step throughput and MFU on one GPU, for a Qwen2.5-0.5B-shaped model.

The model is built from a hard-coded Qwen2.5-0.5B config (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings, rope theta 1e6) with random weights, in bf16, with
flash_attention_2 when `flash_attn` is importable on CUDA, else sdpa. No hub access, no checkpoint: the weights do
not change the cost of a step. Training goes through TRL's DPOTrainer with the package's own arguments
(dpo_scale.train.dpo_config: the recipe defaults, LoRA r16 all-linear, adapter-off reference, no separate
reference copy) on synthetic pairs of a fixed length: every pair is a prompt of `prompt_len` tokens plus a chosen
and a rejected completion of `completion_len` tokens each (a word-level tokenizer maps each synthetic word to
exactly one token, and the script checks the tokenized lengths), so no batch holds padding.

Tokens counted: every token of both sequences (chosen and rejected) of every pair: 2 * batch * T per micro-batch,
T = prompt_len + completion_len. The first `--warmup` optimizer steps are not timed; each timed step is bracketed
by torch.cuda.synchronize().

FLOPs per token (model FLOPs, for MFU). N = parameters of the base model's matmuls (every nn.Linear, lm_head
included: with tied embeddings it is the embedding matrix; the embedding lookup itself costs nothing),
N_L = LoRA adapter parameters, L layers, d = heads * head_dim (attention width), T = sequence length. A matmul
with a frozen weight needs only the input gradient in backward (1x its forward); a trainable one (LoRA) needs
input and weight gradients (2x). Attention (QK^T, PV) has no weights but both operands carry gradients, so its
backward is 2x its forward; it is counted over the full T (no causal discount, as in PaLM's MFU).

    policy forward (adapter on)       2N + 2N_L + 4 L T d
    policy backward                   2N + 4N_L + 8 L T d      (activation grads; weight grads for LoRA only)
    reference forward (adapter off)   2N        + 4 L T d      (TRL's ref_model=None with peft, under no_grad)
    -----------------------------------------------------------
    total                             6N + 6N_L + 16 L T d

(For comparison: a full fine-tune with a separate reference copy is 2N + 4N + 2N = 8N + 16 L T d.) Gradient
checkpointing recomputes the policy forward (2N + 2N_L + 4 L T d more): reported as HFU, not counted in MFU.
Elementwise work (norms, softmax, the log-softmax over the vocabulary, the optimizer) is not counted.
For Qwen2.5-0.5B at T = 512: N = 494 M (358 M in the layers + 136 M lm_head), N_L = 8.8 M, about 3.19 GFLOP/token.

MFU = flops_per_token * tokens/s / peak. Peak defaults to 790e12 bf16 FLOP/s (--peak_flops; H100 SXM's dense
bf16 datasheet figure is 989e12, H100 PCIe 756e12).

  python benchmarks/gpu_step.py [--batch 8] [--prompt_len 256] [--completion_len 256] [--steps 12] [--warmup 2]
      [--gradient_checkpointing] [--attn auto|sdpa|flash_attention_2|eager] [--liger] [--compile] [--peft_input_cast]
      [--prefix_sharing]
      [--peak_flops 790e12] [--name RESULT_NAME]
  python benchmarks/gpu_step.py --device cpu --tiny --steps 2 --warmup 1     (smoke run of the code path)
Writes benchmarks/results/gpu_step.json (gpu_step_smoke.json for --tiny runs, so a smoke run never replaces a
GPU result).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

QWEN25_05B = {
    "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "hidden_act": "silu", "use_sliding_window": False,
}
TINY = {
    **QWEN25_05B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 1024, "max_position_embeddings": 1024,
}
WORDS = 1000  # synthetic words, one token each


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer: "w17" -> one token, so text lengths are token lengths."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = min(WORDS, vocab_size - 2)
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<pad>", "<eos>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>"), words


def synthetic_pairs(n: int, prompt_len: int, completion_len: int, words: int, seed: int = 0) -> list[dict]:
    """Prompt of prompt_len tokens; chosen/rejected of completion_len tokens each once TRL appends EOS."""
    import random

    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(f"w{rng.randrange(words)}" for _ in range(k))

    return [{"prompt": text(prompt_len), "chosen": " " + text(completion_len - 1),
             "rejected": " " + text(completion_len - 1)} for _ in range(n)]


def pick_attention(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def matmul_params(model) -> int:
    """Parameters of every nn.Linear of the base model (lm_head included; LoRA layers excluded)."""
    import torch

    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in name)


def flops_per_token(n: int, n_lora: int, layers: int, attn_width: int, seq: int) -> dict:
    attn = layers * seq * attn_width
    parts = {
        "policy_forward": 2 * n + 2 * n_lora + 4 * attn,
        "policy_backward": 2 * n + 4 * n_lora + 8 * attn,
        "reference_forward": 2 * n + 4 * attn,
    }
    parts["total"] = sum(parts.values())
    parts["recompute_if_checkpointing"] = parts["policy_forward"]
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen2-shaped config (smoke run, e.g. on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="pairs per micro-batch (default 8; 2 with --tiny)")
    ap.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--prompt_len", type=int, default=None, help="prompt tokens (default 256; 32 with --tiny)")
    ap.add_argument("--completion_len", type=int, default=None, help="tokens per completion (256; 32 with --tiny)")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps, warm-up included")
    ap.add_argument("--warmup", type=int, default=2, help="optimizer steps left out of the timing")
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--attn", choices=["auto", "sdpa", "flash_attention_2", "eager"], default="auto")
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--liger", action="store_true",
                    help="Liger's layer kernels (RMSNorm, SwiGLU, RoPE; TRL keeps its own fused LM head)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (TrainingArguments.torch_compile)")
    ap.add_argument("--peft_input_cast", action="store_true",
                    help="keep peft's per-layer fp32 cast of LoRA inputs (the baseline for dpo_scale.lora_speed)")
    ap.add_argument("--profile", metavar="FILE",
                    help="profile the two steps after warm-up with torch.profiler; write the op table to FILE")
    ap.add_argument("--peak_flops", type=float, default=790e12, help="peak bf16 FLOP/s of the device")
    ap.add_argument("--prefix_sharing", action="store_true",
                    help="each pair as one packed row (dpo_scale/prefix_sharing.py); tokens and FLOPs are still "
                         "counted as TRL's two rows, so MFU is then the two-row work per second (effective)")
    ap.add_argument("--name", help="result file name (default gpu_step, or gpu_step_smoke with --tiny)")
    opts = ap.parse_args()
    if opts.warmup >= opts.steps:
        ap.error("--warmup must be smaller than --steps")
    batch = opts.batch or (2 if opts.tiny else 8)
    prompt_len = opts.prompt_len or (32 if opts.tiny else 256)
    completion_len = opts.completion_len or (32 if opts.tiny else 256)
    seq = prompt_len + completion_len

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback
    from trl import DPOTrainer

    from dpo_scale.config import load_recipe
    from dpo_scale.train import dpo_config

    cuda = opts.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("gpu_step: no CUDA device here; use --device cpu --tiny for a smoke run")
    if cuda and torch.device(opts.device).index is not None:
        torch.cuda.set_device(torch.device(opts.device))  # cuda:N (the Trainer then uses the current device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    attn = pick_attention(opts.attn, opts.device)
    shape = TINY if opts.tiny else QWEN25_05B
    tokenizer, words = build_tokenizer(shape["vocab_size"])
    config = Qwen2Config(**shape, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         use_cache=False)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(opts.device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
    build_s = time.perf_counter() - started
    n_matmul = matmul_params(model)
    n_total = sum(p.numel() for p in model.parameters())
    pairs_needed = batch * opts.accum * opts.steps
    dataset = Dataset.from_list(synthetic_pairs(pairs_needed, prompt_len, completion_len, words))

    with tempfile.TemporaryDirectory(prefix="dpo_scale_gpu_step_") as tmp:
        recipe = load_recipe(None, {
            "output_dir": tmp, "device": "cpu" if not cuda else "auto", "dtype": "bfloat16", "bf16": True,
            "max_steps": opts.steps, "per_device_train_batch_size": batch, "gradient_accumulation_steps": opts.accum,
            "max_length": seq, "gradient_checkpointing": opts.gradient_checkpointing, "report_to": "none",
            "save_steps": 10**6, "logging_steps": opts.steps, "lora_r": opts.lora_r, "lora_alpha": 2 * opts.lora_r,
            "use_liger_kernel": opts.liger,
        })
        args = dpo_config(recipe, Path(tmp), 1)
        args.save_strategy = "no"
        args.disable_tqdm = True
        args.torch_compile = opts.compile
        peft_config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
        timing = {"step_s": [], "t0": 0.0}

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args_, state, control, **kw):
                sync()
                timing["t0"] = time.perf_counter()

            def on_step_end(self, args_, state, control, **kw):
                sync()
                timing["step_s"].append(time.perf_counter() - timing["t0"])

        class StepProfiler(TrainerCallback):
            """Where a step's GPU time goes: kernels of the two steps after warm-up (they are timed too, so a
            profiled run's s/step is not a result)."""

            def __init__(self):
                self.prof = None

            def on_step_begin(self, args_, state, control, **kw):
                if state.global_step == opts.warmup and self.prof is None:
                    self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                                   torch.profiler.ProfilerActivity.CUDA])
                    self.prof.__enter__()

            def on_step_end(self, args_, state, control, **kw):
                if self.prof is not None and state.global_step == opts.warmup + 2:
                    sync()
                    self.prof.__exit__(None, None, None)
                    table = self.prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40,
                                                           max_name_column_width=70)
                    Path(opts.profile).write_text(table)
                    print(table[:6000])

        callbacks = [StepTimer()] + ([StepProfiler()] if opts.profile else [])
        trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer,
                             train_dataset=dataset, peft_config=peft_config, callbacks=callbacks)
        from dpo_scale.lora_speed import speed_up_lora

        lora_layers_uncast = 0 if opts.peft_input_cast else speed_up_lora(trainer)  # as dpo_scale.train does
        if opts.prefix_sharing:
            from dpo_scale.train import share_prefixes

            if not share_prefixes(trainer):
                sys.exit(f"gpu_step: attention '{attn}' takes no 4D mask; use --attn sdpa or eager")
        lengths = {(len(r["prompt_ids"]), len(r["chosen_ids"]), len(r["rejected_ids"])) for r in trainer.train_dataset}
        if lengths != {(prompt_len, completion_len, completion_len)}:
            raise RuntimeError(f"synthetic pairs tokenized to {sorted(lengths)[:5]}, expected "
                               f"{(prompt_len, completion_len, completion_len)}")
        n_lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    timed = timing["step_s"][opts.warmup:]
    tokens_per_step = 2 * batch * opts.accum * seq
    s_per_step = sum(timed) / len(timed)
    tokens_per_s = tokens_per_step / s_per_step
    heads = shape["num_attention_heads"]
    attn_width = heads * (shape["hidden_size"] // heads)
    flops = flops_per_token(n_matmul, n_lora, shape["num_hidden_layers"], attn_width, seq)
    achieved = flops["total"] * tokens_per_s
    hardware = (flops["total"] + (flops["recompute_if_checkpointing"] if opts.gradient_checkpointing else 0)) \
        * tokens_per_s
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    figures = {
        "model": "Qwen2.5-0.5B-shaped, random weights" if not opts.tiny else "tiny Qwen2-shaped (smoke run)",
        "device": device_name,
        "settings": {"batch_pairs": batch, "gradient_accumulation_steps": opts.accum, "prompt_len": prompt_len,
                     "completion_len": completion_len, "seq_len": seq, "steps": opts.steps, "warmup": opts.warmup,
                     "timed_steps": len(timed), "dtype": "bfloat16", "attn_implementation": attn,
                     "gradient_checkpointing": opts.gradient_checkpointing, "lora": f"r{opts.lora_r} all-linear",
                     "liger_layer_kernels": opts.liger, "torch_compile": opts.compile,
                     "peft_input_cast": opts.peft_input_cast, "lora_layers_uncast": lora_layers_uncast,
                     "prefix_sharing": opts.prefix_sharing,
                     "peak_flops": opts.peak_flops, "config": shape},
        "params_total": n_total, "params_matmul": n_matmul, "params_lora": n_lora,
        "flops_per_token": flops,
        "tokens_per_step": tokens_per_step, "s_per_step": round(s_per_step, 4),
        "step_s": [round(s, 4) for s in timing["step_s"]],
        "tokens_per_s": round(tokens_per_s, 1),
        "achieved_tflops": round(achieved / 1e12, 3),
        "mfu": round(achieved / opts.peak_flops, 4),
        "hfu": round(hardware / opts.peak_flops, 4),
        "peak_gpu_memory_gib": round(peak_mem, 2) if peak_mem is not None else None,
        "model_build_s": round(build_s, 2),
    }
    print(f"device {device_name}  attn {attn}  batch {batch} pairs x {seq} tokens x 2 sequences")
    print(f"params: matmul {n_matmul / 1e6:.1f} M, LoRA {n_lora / 1e6:.2f} M; "
          f"{flops['total'] / 1e9:.3f} GFLOP/token")
    print(f"s/step {s_per_step:.4f} over {len(timed)} steps  tokens/s {tokens_per_s:,.0f}  "
          f"achieved {achieved / 1e12:.2f} TFLOP/s  MFU {figures['mfu']:.2%} "
          f"(peak {opts.peak_flops / 1e12:.0f} TFLOP/s)"
          + (f"  HFU {figures['hfu']:.2%}" if opts.gradient_checkpointing else "")
          + (f"  peak mem {peak_mem:.1f} GiB" if peak_mem is not None else ""))
    if not cuda:
        print("(CPU run: MFU against a GPU peak means nothing; this only exercises the code path)")
    name = opts.name or ("gpu_step_smoke" if opts.tiny else "gpu_step")
    print("written:", save_result(name, figures))


if __name__ == "__main__":
    main()
