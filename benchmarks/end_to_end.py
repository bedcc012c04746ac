"""The whole default job, timed: `dpo-scale run --config configs/smollm2_cpu.yaml` from scratch on all 1000
identity prompts, as a user runs it from an installed environment (the `dpo-scale` console script, a fresh
model cache, so the one-time GGUF conversion counts too).

  python benchmarks/end_to_end.py [--output_dir runs/end_to_end] [extra recipe overrides ...]
Writes benchmarks/results/end_to_end.json: prompts, seconds (the whole job), each stage's seconds, the host,
and the run's evaluation summary. Target (issue 16): seconds <= 900 on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--output_dir", default=str(REPO / "runs" / "end_to_end"))
    ap.add_argument("--keep_cache", action="store_true", help="reuse $DPO_SCALE_CACHE (skip the GGUF conversion)")
    args, extra = ap.parse_known_args()
    out = Path(args.output_dir)
    shutil.rmtree(out, ignore_errors=True)
    script = Path(sys.executable).parent / "dpo-scale"
    cmd = [str(script), "run", "--config", str(REPO / "configs" / "smollm2_cpu.yaml"), "--output_dir", str(out),
           *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as cache:
        if not args.keep_cache:
            env["DPO_SCALE_CACHE"] = cache
        print("running:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir())  # outside the checkout
        seconds = time.perf_counter() - start
    timings = json.loads((out / "timings.json").read_text())
    stats = json.loads((out / "data" / "stats.json").read_text())
    evaluation = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() else {}
    figures = {
        "command": " ".join(["dpo-scale", *cmd[1:]]),
        "prompts": stats.get("prompts"),
        "pairs": stats.get("pairs"),
        "seconds": round(seconds, 1),
        "stages": {name: t.get("seconds") for name, t in timings.items()},
        "target_seconds": 900,
        "eval": {k: v for k, v in evaluation.items() if k in ("base", "trained", "summary", "facts", "identity")},
    }
    print(f"{'stage':8} {'seconds':>8}")
    for name, s in figures["stages"].items():
        print(f"{name:8} {s if s is not None else '-':>8}")
    print(f"{'total':8} {figures['seconds']:8.1f}   ({figures['prompts']} prompts, target <= 900 s)")
    print("written:", save_result("end_to_end", figures))


if __name__ == "__main__":
    main()
