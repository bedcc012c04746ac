"""Generation for the data stage on one GPU: the 1000 shipped identity prompts, 64 new tokens each, greedy,
through the package's hf backend, on a Qwen2.5-0.5B-shaped model with random weights in bf16 (no hub access;
the weights do not change the cost of a step, and random weights never stop early, so every row runs the full
64 tokens: an upper bound on the real job's time). Tokenized with a word-level tokenizer (one token per word).

vLLM is not timed here: the GPU machine has no network and its CUDA wheel is far over what can be carried.
  python benchmarks/gpu_generation.py [--batch 256] [--max_new_tokens 64]
Writes benchmarks/results/gpu_generation.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402
from gpu_step import QWEN25_05B, build_tokenizer  # noqa: E402


def main() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.prompts import load_prompts

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=None, help="first N prompts only (smoke runs)")
    args = ap.parse_args()
    tokenizer, words = build_tokenizer(QWEN25_05B["vocab_size"])
    config = AutoConfig.for_model("qwen2", **QWEN25_05B)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).to(args.device)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    prompts = load_prompts("builtin:identity", limit=args.prompts)
    # each prompt: a fixed 24-token system/template prefix plus one word-token per word of the question
    ids = [[2 + (i % words) for i in range(24)] + [2 + (hash(w) % words) for w in p.text.split()] for p in prompts]
    gen = HFGenerator(model, tokenizer, args.batch)
    gen.generate(ids[: args.batch], Sampling(8, 0.0), seed=0)  # warm-up (allocator, kernels)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    outs = gen.generate(ids, Sampling(args.max_new_tokens, 0.0), seed=0)
    sync()
    seconds = time.perf_counter() - start
    tokens = sum(o.num_tokens for o in outs)
    figures = {"model": "Qwen2.5-0.5B shape, random weights, bf16", "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "prompts": len(ids), "max_new_tokens": args.max_new_tokens, "batch": args.batch,
               "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
    print(figures)
    if args.prompts is None:
        print("written:", save_result("gpu_generation", figures))


if __name__ == "__main__":
    main()
