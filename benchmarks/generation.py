"""Generation throughput on the same identity prompts and SmolLM2 (greedy, same max_new_tokens):

  (a) seed     the seed's loop: one prompt at a time with model.generate
  (b) hf       our batched transformers backend (dpo_scale.generation.hf)
  (c) vllm     our vLLM backend (dpo_scale.generation.vllm_backend), engine start timed apart
  (d) raw      raw vLLM: LLM(...).generate(text prompts) with the same settings

Prints tokens/s and the ratios, writes benchmarks/results/generation.json.
  python benchmarks/generation.py [--prompts 256] [--seed_prompts 32] [--max_new_tokens 128] [--skip_vllm]
                                  [--vllm_repeats 2]
The seed loop is slow, so it runs on the first --seed_prompts prompts; ratios compare tokens/s.
vLLM runs in child processes (its engine must start under __main__ and never shares a process with HF).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402


def prompts_and_ids(n: int):
    from dpo_scale.generation.runner import render_prompts
    from dpo_scale.models import load_tokenizer, resolve_model
    from dpo_scale.prompts import load_prompts

    path = resolve_model("smollm2")
    tokenizer = load_tokenizer(path)
    texts = [p.text for p in load_prompts("builtin:identity", limit=n)]
    return path, tokenizer, texts, render_prompts(tokenizer, texts, None)


def bench_seed(path, tokenizer, ids, max_new_tokens: int, dtype: str) -> dict:
    import torch

    from dpo_scale.models import load_model

    model = load_model(path, dtype, "cpu").eval()
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for prompt in ids:
            out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            tokens += out.shape[1] - len(prompt)
    seconds = time.perf_counter() - start
    return {"prompts": len(ids), "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds}


def bench_hf(path, tokenizer, ids, max_new_tokens: int, dtype: str, batch_size: int) -> dict:
    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.models import load_model

    gen = HFGenerator(load_model(path, dtype, "cpu"), tokenizer, batch_size)
    start = time.perf_counter()
    outs = gen.generate(ids, Sampling(max_new_tokens, 0.0), seed=0)
    seconds = time.perf_counter() - start
    tokens = sum(o.num_tokens for o in outs)
    return {"prompts": len(ids), "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds,
            "texts": [o.text for o in outs]}


def vllm_child(mode: str, n: int, max_new_tokens: int, dtype: str, reserved: str | None) -> dict:
    """Run in a fresh interpreter: `python generation.py --child MODE`."""
    cmd = [sys.executable, __file__, "--child", mode, "--prompts", str(n), "--max_new_tokens", str(max_new_tokens),
           "--vllm_dtype", dtype]
    if reserved is not None:
        cmd += ["--vllm_reserved_cpus", reserved]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"vLLM child {mode} failed:\n{out.stderr[-3000:]}")


def child(mode: str, n: int, max_new_tokens: int, dtype: str, reserved: str | None) -> None:
    import os

    if reserved is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = reserved
    path, tokenizer, texts, ids = prompts_and_ids(n)
    start = time.perf_counter()
    if mode == "vllm":
        from dpo_scale.generation.base import Sampling
        from dpo_scale.generation.vllm_backend import VLLMGenerator

        gen = VLLMGenerator(path, dtype, seed=0, reserved_cpus=int(reserved) if reserved is not None else None)
        started = time.perf_counter()
        outs = gen.generate(ids, Sampling(max_new_tokens, 0.0), seed=0)
        texts_out = [o.text for o in outs]
        tokens = sum(o.num_tokens for o in outs)
    else:
        from vllm import LLM, SamplingParams

        llm = LLM(model=path, dtype=dtype, seed=0, enforce_eager=True, max_model_len=2048,
                  kv_cache_memory_bytes=2 * 2**30)
        started = time.perf_counter()
        rendered = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                  tokenize=False) for t in texts]
        res = llm.generate(rendered, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
        texts_out = [r.outputs[0].text for r in res]
        tokens = sum(len(r.outputs[0].token_ids) for r in res)
    seconds = time.perf_counter() - started
    print("RESULT " + json.dumps({"prompts": n, "tokens": tokens, "seconds": round(seconds, 2),
                                  "tokens_per_s": tokens / seconds, "engine_start_s": round(started - start, 1),
                                  "texts": texts_out}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--seed_prompts", type=int, default=32)
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32", help="HF dtype (seed loop and hf backend)")
    ap.add_argument("--vllm_dtype", default="float32")
    ap.add_argument("--vllm_reserved_cpus", default=None)
    ap.add_argument("--batch_size", type=int, default=128)
    ap.add_argument("--skip_vllm", action="store_true")
    ap.add_argument("--vllm_repeats", type=int, default=1, help="runs of each vLLM engine (best kept)")
    ap.add_argument("--child", choices=["vllm", "raw"])
    args = ap.parse_args()
    if args.child:
        child(args.child, args.prompts, args.max_new_tokens, args.vllm_dtype, args.vllm_reserved_cpus)
        return

    path, tokenizer, texts, ids = prompts_and_ids(args.prompts)
    rows = {}
    if not args.skip_vllm:  # vLLM first, before this process holds a model
        # Both run the same engine; with --vllm_repeats N they alternate order (raw first, then ours first, ...)
        # and each keeps its fastest run, so drift of the machine's speed does not favour either.
        runs: dict[str, list[dict]] = {"raw_vllm": [], "vllm_backend": []}
        for repeat in range(args.vllm_repeats):
            order = [("raw_vllm", "raw"), ("vllm_backend", "vllm")]
            for name, mode in order if repeat % 2 == 0 else order[::-1]:
                runs[name].append(vllm_child(mode, args.prompts, args.max_new_tokens, args.vllm_dtype,
                                             args.vllm_reserved_cpus))
        for name, results in runs.items():
            rows[name] = {**max(results, key=lambda r: r["tokens_per_s"]),
                          "all_tokens_per_s": [round(r["tokens_per_s"], 1) for r in results]}
    rows["seed_loop"] = bench_seed(path, tokenizer, ids[: args.seed_prompts], args.max_new_tokens, args.dtype)
    rows["hf_backend"] = bench_hf(path, tokenizer, ids, args.max_new_tokens, args.dtype, args.batch_size)

    def ratio(a: str, b: str) -> float | None:
        return round(rows[a]["tokens_per_s"] / rows[b]["tokens_per_s"], 3) if a in rows and b in rows else None

    figures = {
        "model": "SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)",
        "settings": {"prompts": args.prompts, "seed_prompts": args.seed_prompts, "greedy": True,
                     "max_new_tokens": args.max_new_tokens, "hf_dtype": args.dtype, "vllm_dtype": args.vllm_dtype,
                     "batch_size": args.batch_size, "vllm_reserved_cpus": args.vllm_reserved_cpus,
                     "vllm_repeats": args.vllm_repeats},
        "hf_vs_seed": ratio("hf_backend", "seed_loop"),
        "hf_vs_vllm": ratio("hf_backend", "raw_vllm"),
        "vllm_backend_vs_raw": ratio("vllm_backend", "raw_vllm"),
        "raw": {k: {kk: vv for kk, vv in v.items() if kk != "texts"} for k, v in rows.items()},
    }
    if "raw_vllm" in rows:
        same = sum(a == b for a, b in zip(rows["hf_backend"]["texts"], rows["raw_vllm"]["texts"], strict=True))
        figures["hf_equals_raw_vllm_texts"] = f"{same}/{args.prompts}"
    print(f"{'engine':14} {'tokens':>8} {'seconds':>9} {'tok/s':>8} {'start s':>8}")
    for name, r in rows.items():
        start = r.get("engine_start_s", "")
        print(f"{name:14} {r['tokens']:8d} {r['seconds']:9.1f} {r['tokens_per_s']:8.1f} {start:>8}")
    for key in ("hf_vs_seed", "hf_vs_vllm", "vllm_backend_vs_raw"):
        print(f"{key:22} {figures[key]}")
    print("written:", save_result("generation", figures))


if __name__ == "__main__":
    main()
