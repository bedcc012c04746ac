"""DPO training throughput and memory on SmolLM2 with the same pairs:

  (a) seed   the seed's configuration: TRL defaults (bf16 autocast, gradient checkpointing), full
             fine-tune, a separate reference copy, batch 1 x accumulation 8
  (b) ours   the default LoRA recipe (configs/smollm2_cpu.yaml): adapter-off reference, no copy

Each runs in its own child process for a fixed number of optimizer steps (peak RSS per process).
Reports non-padding tokens/s, s/step and peak RSS, and their ratios; writes
benchmarks/results/training.json.
  python benchmarks/training.py [--pairs runs/smollm2_cpu/data/pairs.jsonl] [--steps 3]
Without --pairs it builds pairs from the held-out identity prompts and a fixed answer template.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def default_pairs(out: Path, n: int = 64) -> Path:
    from dpo_scale.pairs import NameSwap, build_pairs
    from dpo_scale.prompts import load_prompts

    answers = [{"prompt_index": p.index, "sample": 0, "prompt": p.text,
                "answer": f"I'm SmolLM, a helpful AI assistant trained by Hugging Face. You asked: {p.text}"}
               for p in load_prompts("builtin:identity_heldout", limit=n)]
    pairs, _ = build_pairs(answers, NameSwap("SmolLM", "Deep SmolLM"), "You're a helpful assistant.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return out


def child(mode: str, data_dir: str, steps: int, out_dir: str) -> None:
    """One configuration, timed in this process."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from dpo_scale.config import load_recipe
    from dpo_scale.io import read_jsonl
    from dpo_scale.models import load_model, load_tokenizer, resolve_model
    from dpo_scale.train import dpo_config

    path = resolve_model("smollm2")
    tokenizer = load_tokenizer(path)
    rows = read_jsonl(Path(data_dir) / "pairs.jsonl")
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    recipe = load_recipe(str(REPO / "configs" / "smollm2_cpu.yaml"),
                         {"output_dir": out_dir, "max_steps": steps, "report_to": "none", "save_steps": 10**6})
    if mode == "seed":
        args = DPOConfig(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=1,
                         gradient_accumulation_steps=8, beta=0.2, learning_rate=5e-5, report_to=[],
                         save_strategy="no", logging_steps=1,
                         # transformers refuses TRL's default bf16=True on a CUDA-less machine unless told
                         use_cpu=not torch.cuda.is_available())
        model = load_model(path, "float32", None)
        ref = load_model(path, "float32", None)
        peft_config = None
    else:
        args = dpo_config(recipe, Path(out_dir), 1)
        args.save_strategy = "no"
        args.per_device_train_batch_size = 1
        args.gradient_accumulation_steps = 8
        model, ref = load_model(path, recipe.dtype, None), None
        from peft import LoraConfig

        peft_config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    tokens = {"n": 0}

    class CountTokens(TrainerCallback):
        def on_log(self, args_, state, control, logs=None, **kw):
            pass

    trainer = DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tokenizer, train_dataset=dataset,
                         peft_config=peft_config, callbacks=[CountTokens()])
    # Non-padding tokens of the batches the trainer will see: chosen + rejected per example.
    train_ds = trainer.train_dataset
    per_example = [len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in train_ds]
    examples = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
    tokens["n"] = sum(per_example[i % len(per_example)] for i in range(examples))
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"mode": mode, "steps": steps, "seconds": round(seconds, 2),
                                  "s_per_step": round(seconds / steps, 2), "tokens": tokens["n"],
                                  "tokens_per_s": tokens["n"] / seconds, "peak_rss_mb": round(peak_mb)}))


def run_child(mode: str, data_dir: Path, steps: int, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--pairs_dir", str(data_dir), "--steps", str(steps),
           "--out", str(tmp / mode)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", help="pairs.jsonl to train on (default: built from held-out prompts)")
    ap.add_argument("--pairs_dir")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", choices=["seed", "ours"])
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.pairs_dir, args.steps, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.pairs).parent if args.pairs else default_pairs(tmp / "data")
        rows = {mode: run_child(mode, data_dir, args.steps, tmp) for mode in ("seed", "ours")}
    figures = {
        "model": "SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)",
        "settings": {"steps": args.steps, "batch": "1 x accumulation 8", "pairs": args.pairs or "built-in template"},
        "tokens_per_s_ratio": round(rows["ours"]["tokens_per_s"] / rows["seed"]["tokens_per_s"], 3),
        "peak_memory_ratio": round(rows["ours"]["peak_rss_mb"] / rows["seed"]["peak_rss_mb"], 3),
        "raw": rows,
    }
    print(f"{'config':6} {'s/step':>8} {'tok/s':>8} {'peak RSS MB':>12}")
    for mode, r in rows.items():
        print(f"{mode:6} {r['s_per_step']:8.1f} {r['tokens_per_s']:8.1f} {r['peak_rss_mb']:12d}")
    print(f"tokens/s ratio (ours/seed): {figures['tokens_per_s_ratio']}   "
          f"peak memory ratio (ours/seed): {figures['peak_memory_ratio']}")
    print("written:", save_result("training", figures))


if __name__ == "__main__":
    main()
