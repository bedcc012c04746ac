"""The default job's data stage with each generation backend, in one run: `dpo-scale generate --config
configs/smollm2_cpu.yaml --backend vllm` against `--backend hf`, from scratch, alternating, on the full 1000 identity
prompts and the anchors (what `backend: auto` chooses between).

  python benchmarks/data_stage.py [--rounds 2] [extra recipe overrides ...]
Writes benchmarks/results/data_stage.json: each run's seconds (the whole command, as a user waits for it) and the
stage's own generation seconds, whether both backends wrote the same pairs, and the ratio of the medians. The model
cache is shared by all runs (converted once before the first), so the GGUF conversion is counted in none.
vLLM is the anchor as a user runs it for a batch job: every core (`vllm_reserved_cpus: 0`, the recipe's default) and
the dtype `dtype: auto` picks for the host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("vllm", "hf")


def generate(backend: str, out: Path, env: dict, extra: list[str]) -> None:
    """The installed `dpo-scale generate` on the default recipe, from scratch into `out`."""
    shutil.rmtree(out, ignore_errors=True)
    script = Path(sys.executable).parent / "dpo-scale"
    cmd = [str(script), "generate", "--config", str(REPO / "configs" / "smollm2_cpu.yaml"), "--output_dir", str(out),
           "--backend", backend, *extra]
    subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)


def run_once(backend: str, out: Path, env: dict, extra: list[str]) -> dict:
    start = time.perf_counter()
    generate(backend, out, env, extra)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    return {"backend": backend, "seconds": round(seconds, 1),
            "generation_seconds": manifest["generation_seconds_this_run"],
            "tokens": manifest["generated_tokens_this_run"], "pairs": manifest["counts"]["pairs"],
            "precision": manifest["precision"]["dtype"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="vllm then hf, this many times")
    ap.add_argument("--work_dir", default=str(REPO / "runs" / "bench_data_stage"))
    args, extra = ap.parse_known_args()
    work = Path(args.work_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as cache:
        env["DPO_SCALE_CACHE"] = cache
        generate("hf", work / "warmup", env, ["--max_prompts", "2", "--max_anchor_prompts", "1", *extra])  # converts
        for r in range(args.rounds):
            for backend in BACKENDS:
                run = run_once(backend, work / f"{backend}{r + 1}", env, extra)
                runs.append(run)
                print(f"round {r + 1} {backend:5} {run['seconds']:7.1f} s (generating {run['generation_seconds']} s, "
                      f"{run['tokens']} tokens, {run['precision']})", flush=True)
    pairs = {b: (work / f"{b}1" / "data" / "pairs.jsonl").read_text() for b in BACKENDS}
    median = {b: statistics.median(r["seconds"] for r in runs if r["backend"] == b) for b in BACKENDS}
    median_gen = {b: statistics.median(r["generation_seconds"] for r in runs if r["backend"] == b) for b in BACKENDS}
    figures = {
        "command": "dpo-scale generate --config configs/smollm2_cpu.yaml --backend {vllm,hf} " + " ".join(extra),
        "runs": runs,
        "median_seconds": median,
        "median_generation_seconds": median_gen,
        "same_pairs": pairs["vllm"] == pairs["hf"],
        "hf_vs_vllm_stage": round(median["vllm"] / median["hf"], 3),
        "hf_vs_vllm_generation": round(median_gen["vllm"] / median_gen["hf"], 3),
    }
    print(f"median seconds: vllm {median['vllm']:.1f}, hf {median['hf']:.1f}: hf {figures['hf_vs_vllm_stage']}x "
          f"(generation alone {figures['hf_vs_vllm_generation']}x); same pairs: {figures['same_pairs']}")
    print("written:", save_result("data_stage", figures))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
