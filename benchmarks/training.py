"""DPO + LoRA training on SmolLM2: dpo_scale's training stage against the best a user gets from TRL by hand.

  (a) trl_tuned  TRL's DPOTrainer with the recipe's peft LoRA (rank, modules, layers), adapter-off reference, tuned by
                 hand for this host: the host's fast precision (bf16 autocast where the CPU has AMX/AVX512-BF16),
                 no gradient checkpointing, the recipe's batch and eager attention, whole answers, the same KL
                 anchor as ours (no identity-tail hold: it needs the name window), no reference log-probs precomputed,
                 chosen and rejected as two rows (TRL has no prefix sharing), the recipe's LoRA layers (peft's
                 layers_to_transform) with every pass through all layers (TRL has no shared trunk), and TRL's fused
                 LM head over every position on CPU (it scores only labelled ones on CUDA alone)
  (b) ours       `dpo_scale.train` with the default recipe (configs/smollm2_cpu.yaml): dtype auto, name window,
                 reference log-probs precomputed when an epoch repeats, each DPO batch and each KL batch as one
                 prefix tree (the tokens its sequences share once, no padding), the layers below the adapter run once
                 per batch (shared trunk), the LM head over answer positions only
  (c) ours_fp32  (b) with dtype float32: the figure of merit on an fp32 host

Every mode, the baseline included, runs with dpo_scale's malloc settings (`dpo_scale/allocator.py`: freed tensors
stay in the heap), what a user tuning by hand gets from preloading jemalloc or tcmalloc as PyTorch's CPU guide
advises; `--lever malloc` measures them against glibc's defaults.

Each runs in its own child process over the same pairs and anchors for `--epochs` epochs, from building the
trainer (precomputation included) to the last step. Reported: pairs per second over the whole run (the
figure a user waits on), and for the training steps alone `cpu_mfu` = model FLOPs per second / the host's
GEMM peak for the dtype in use, measured in the same run.

How FLOPs are counted: `torch.utils.flop_counter.FlopCounterMode` over one whole optimizer step (untimed),
i.e. every matmul, batched matmul and attention kernel the step actually runs: the policy's forward and
backward, the reference forward (when not precomputed) and the anchor passes (policy, and the base when not
cached). The peak is the best of several square GEMMs (torch.mm, 2048 x 2048) in that dtype on this host.

  python benchmarks/training.py [--pairs 64] [--epochs 2]   -> benchmarks/results/training.json
  python benchmarks/training.py --levers                    -> training_levers.json (each lever off in turn)
  python benchmarks/training.py --lever prefix_sharing      -> training_lever_prefix_sharing.json (one lever)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODES = ("trl_tuned", "ours", "ours_fp32")
# `--levers`: ours with one lever off at a time, each lever's share measured in one run against ours
# the identity-tail hold reads the name window: off with it
LEVER_OFF = {"ours_no_name_window": {"name_window_tokens": None, "hold_identity_tails": False},
             "ours_no_precompute": {"precompute_ref_log_probs": False},
             "ours_no_eager_attention": {"model_init_kwargs": None},
             "ours_no_prefix_sharing": {"prefix_sharing": False},
             "ours_no_shared_trunk": {"shared_trunk": False},
             "ours_no_compact_lm_head": {"compact_lm_head": False},
             "ours_no_malloc": {}}
LEVER_ENV = {"ours_no_malloc": {"DPO_SCALE_MALLOC": "system"}}  # the child's environment: glibc's defaults


def gemm_peak(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a square matmul in `dtype_name` on this host."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def build_data(out: Path, pairs: int, anchors: int) -> Path:
    """Pairs from real identity answers' shape (old name in the answer) and anchors from the shipped prompts,
    with fixed answers: no generation needed, the same rows for every mode."""
    from dpo_scale.pairs import NameSwap, build_pairs, split_anchors
    from dpo_scale.prompts import load_prompts

    identity = [{"prompt_index": p.index, "sample": 0, "prompt": p.text,
                 "answer": f"I'm SmolLM, a helpful AI assistant trained by Hugging Face. You asked: {p.text} "
                           "I will answer as clearly and as helpfully as I can."}
                for p in load_prompts("builtin:identity", limit=pairs)]
    ordinary = [{"prompt_index": p.index, "sample": 0, "prompt": p.text, "anchor": True,
                 "answer": f"Here is a short answer to your question: {p.text} It takes a few sentences to "
                           "explain, so let me go through it step by step."}
                for p in load_prompts("builtin:anchor_prompts", limit=anchors)]
    rows, _ = build_pairs(identity + ordinary, NameSwap("SmolLM", "Deep SmolLM"), "You're a helpful assistant.")
    pairs, anchors = split_anchors(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (out / "anchors.jsonl").write_text("".join(json.dumps(r) + "\n" for r in anchors))
    return out


def child(mode: str, data_dir: str, epochs: float, out_dir: str) -> None:
    """One configuration, timed in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import TrainerCallback

    import dpo_scale.train as train_stage
    from dpo_scale.allocator import describe, keep_freed_memory
    from dpo_scale.config import load_recipe

    keep_freed_memory()  # skipped under LEVER_ENV's opt-out

    overrides = {"output_dir": out_dir, "data_dir": data_dir, "num_train_epochs": epochs, "report_to": "none",
                 "save_steps": 10**6, "logging_steps": 1}
    if mode == "ours_fp32":
        overrides["dtype"] = "float32"
    overrides.update(LEVER_OFF.get(mode, {}))
    if mode == "trl_tuned":
        overrides.update({"name_window_tokens": None, "hold_identity_tails": False, "precompute_ref_log_probs": False,
                          "anchor_top_k": None, "prefix_sharing": False, "shared_trunk": False,
                          "compact_lm_head": False})
    recipe = load_recipe(str(REPO / "configs" / "smollm2_cpu.yaml"), overrides)
    timing: dict = {"step_starts": [], "flops": None}

    class TimeAndCount(TrainerCallback):
        """Times every optimizer step; counts the FLOPs of the last one (excluded from the timed steps)."""

        counter: FlopCounterMode | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            timing["step_starts"].append(time.perf_counter())
            if state.global_step == state.max_steps - 1:
                self.counter = FlopCounterMode(display=False)
                self.counter.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
                timing["flops"] = self.counter.get_total_flops()
                self.counter = None

    start = time.perf_counter()
    train_stage.train(recipe, callbacks=[TimeAndCount()])
    total = time.perf_counter() - start
    manifest = json.loads((Path(out_dir) / "adapter" / "train_manifest.json").read_text())
    starts = timing["step_starts"]
    # steady steps: from the second (the first builds the anchor cache / warms up) to the last, excluded
    steady = (starts[-1] - starts[1]) / (len(starts) - 2) if len(starts) > 3 else None
    precision = manifest.get("precision", {})
    dtype = "bfloat16" if precision.get("autocast_bf16") or precision.get("dtype") == "bfloat16" else "float32"
    print("RESULT " + json.dumps({
        "mode": mode, "pairs": manifest["pairs"], "epochs": epochs, "steps": manifest["global_step"],
        "seconds": round(total, 2), "pairs_per_s": manifest["pairs"] * epochs / total,
        "steady_s_per_step": steady, "flops_per_step": timing["flops"], "dtype": dtype,
        "threads": torch.get_num_threads(), "precision": precision, "malloc": describe(),
    }))


def run_child(mode: str, data_dir: Path, epochs: float, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--data_dir", str(data_dir), "--epochs", str(epochs),
           "--out", str(tmp / mode)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **LEVER_ENV.get(mode, {})})
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--anchors", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--child", choices=(*MODES, *LEVER_OFF))
    ap.add_argument("--levers", action="store_true", help="ours, then ours with each lever off (training_levers.json)")
    ap.add_argument("--lever", choices=[m.removeprefix("ours_no_") for m in LEVER_OFF],
                    help="ours against ours with this one lever off (training_lever_<name>.json)")
    ap.add_argument("--data_dir")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data_dir, args.epochs, args.out)
        return
    if args.levers or args.lever:
        levers(args, [f"ours_no_{args.lever}"] if args.lever else list(LEVER_OFF))
        return
    peaks = {dtype: round(gemm_peak(dtype), 1) for dtype in ("float32", "bfloat16")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = build_data(tmp / "data", args.pairs, args.anchors)
        rows = {mode: run_child(mode, data_dir, args.epochs, tmp) for mode in MODES}
    for row in rows.values():
        flops, step = row["flops_per_step"], row["steady_s_per_step"]
        row["gflops_per_s"] = round(flops / step / 1e9, 1) if flops and step else None
        row["cpu_mfu"] = round(row["gflops_per_s"] / peaks[row["dtype"]], 3) if row["gflops_per_s"] else None
    figures = {
        "model": "SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)",
        "settings": {"pairs": args.pairs, "anchors": args.anchors, "epochs": args.epochs,
                     "recipe": "configs/smollm2_cpu.yaml"},
        "gemm_peak_gflops": peaks,
        "pairs_per_s_ratio": round(rows["ours"]["pairs_per_s"] / rows["trl_tuned"]["pairs_per_s"], 3),
        "cpu_mfu": rows["ours"]["cpu_mfu"],
        "cpu_mfu_fp32": rows["ours_fp32"]["cpu_mfu"],
        "flops_counting": "torch FlopCounterMode over one whole optimizer step (forward, backward, reference and "
                          "anchor passes as run); peak = best 2048^3 torch.mm in the same dtype, same run",
        "raw": rows,
    }
    print(f"GEMM peak GFLOP/s: {peaks}")
    print(f"{'mode':10} {'dtype':9} {'seconds':>8} {'pairs/s':>8} {'s/step':>7} {'GFLOP/s':>8} {'cpu_mfu':>8}")
    for mode, r in rows.items():
        print(f"{mode:10} {r['dtype']:9} {r['seconds']:8.1f} {r['pairs_per_s']:8.3f} "
              f"{(r['steady_s_per_step'] or 0):7.2f} {(r['gflops_per_s'] or 0):8.1f} {(r['cpu_mfu'] or 0):8.3f}")
    print(f"pairs/s ours / TRL tuned by hand: {figures['pairs_per_s_ratio']}")
    print("written:", save_result("training", figures))


def levers(args, modes: list[str]) -> None:
    """Each of ours' levers alone: ours against ours with that one lever off, same data, one run."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = build_data(tmp / "data", args.pairs, args.anchors)
        rows = {mode: run_child(mode, data_dir, args.epochs, tmp) for mode in ("ours", *modes)}
    gain = {mode.removeprefix("ours_no_"): round(rows["ours"]["pairs_per_s"] / rows[mode]["pairs_per_s"], 3)
            for mode in modes}
    print(f"{'mode':22} {'seconds':>8} {'pairs/s':>8}")
    for mode, r in rows.items():
        print(f"{mode:22} {r['seconds']:8.1f} {r['pairs_per_s']:8.3f}")
    print("pairs/s of ours over ours without the lever:", gain)
    print("written:", save_result(f"training_lever_{args.lever}" if args.lever else "training_levers", {
        "settings": {"pairs": args.pairs, "anchors": args.anchors, "epochs": args.epochs},
        "speedup_from_lever": gain, "raw": rows}))


if __name__ == "__main__":
    main()
