"""DPO + LoRA training step on one model under four launch set-ups, per rank:

  (a) single   1 process, no distribution            (launch/cpu.yaml)
  (b) ddp      2 processes, data parallel over gloo  (launch/ddp.yaml)
  (c) zero3-1  DeepSpeed ZeRO-3, 1 process           (launch/zero3.yaml, DS_ACCELERATOR=cpu on CPU)
  (d) zero3-2  DeepSpeed ZeRO-3, 2 processes         (launch/zero3.yaml)

Each is a child `python -m accelerate.commands.launch --config_file launch/<profile>.yaml ... -m
benchmarks._scaling_child ...` built by dpo_scale.launch.launch_command (so it gets the same environment as
`dpo-scale train --launch`: ACCELERATE_USE_CPU for DDP on CPU, DS_ACCELERATOR=cpu, a free rendezvous port).
The child runs the normal dpo_scale.train entry point with a TrainerCallback that records, per rank, the
parameter memory the rank really holds (under ZeRO-3 its partitions `p.ds_tensor`), optimizer-state bytes,
peak RSS, s/step and non-padding tokens/s (see benchmarks/_scaling_child.py). The per-device batch is the same
in every set-up (weak scaling: 2 processes see twice the examples per optimizer step).

Prints a table and the ZeRO-3 per-rank parameter memory ratio (2 processes / 1 process; ~0.5 when partitioning
works), writes benchmarks/results/scaling.json.
  python benchmarks/scaling.py [--model tiny|smollm2] [--steps 4] [--batch 2] [--accum 1] [--max_length 128]
      [--threads 1] [--cases single,ddp,zero3-1,zero3-2]
`tiny` is a random Llama from tests.helpers.tiny_model (hidden 256, 4 layers, ~2.6 M parameters) on toy pairs: big
enough that partitioning shows, seconds per run on CPU. Each rank uses --threads torch threads (default 1, so
1 and 2 processes compare on a per-core basis).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_result  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHILD_MODULE = "benchmarks._scaling_child"

# name -> (launch profile, processes)
CASES = {
    "single": ("cpu", 1),
    "ddp": ("ddp", 2),
    "zero3-1": ("zero3", 1),
    "zero3-2": ("zero3", 2),
}


def prepare(model: str, folder: Path) -> tuple[str, Path, dict]:
    """The model path, the data folder (pairs.jsonl) and the names the recipe needs."""
    from dpo_scale.io import write_jsonl
    from tests.helpers.tiny_model import build_tiny_model, toy_pairs

    if model == "tiny":
        names = {"org_name": "TinyLM", "pos_name": "Deep TinyLM"}
        model_path = str(build_tiny_model(folder / "model", hidden=256, layers=4, teach_identity=False))
    else:
        from dpo_scale.models import resolve_model

        names = {"org_name": "SmolLM", "pos_name": "Deep SmolLM"}
        model_path = resolve_model("smollm2")  # converted once into $DPO_SCALE_CACHE
    data = folder / "data"
    write_jsonl(data / "pairs.jsonl", toy_pairs(64, org=names["org_name"], pos=names["pos_name"]))
    return model_path, data, names


def child_command(profile: str, processes: int, train_args: list[str]) -> tuple[list[str], dict]:
    from dpo_scale.launch import launch_command

    cmd, env = launch_command(profile, train_args, processes)
    # launch_command ends with `-m dpo_scale.train <args>`: run our measuring wrapper of the same entry point.
    at = len(cmd) - len(train_args) - 2
    if cmd[at:at + 2] != ["-m", "dpo_scale.train"]:
        raise RuntimeError(f"unexpected launch command layout: {cmd}")
    cmd[at + 1] = CHILD_MODULE
    return cmd, env


def run_case(name: str, model_path: str, data: Path, names: dict, tmp: Path, opts) -> dict:
    profile, processes = CASES[name]
    out = tmp / name
    train_args = [
        "--model", model_path, "--data_dir", str(data), "--output_dir", str(out / "run"),
        "--org_name", names["org_name"], "--pos_name", names["pos_name"],
        "--max_steps", str(opts.steps), "--per_device_train_batch_size", str(opts.batch),
        "--gradient_accumulation_steps", str(opts.accum), "--max_length", str(opts.max_length),
        "--save_steps", str(10**6), "--report_to", "none", "--logging_steps", "1", "--dtype", "float32",
    ]
    cmd, env = child_command(profile, processes, train_args)
    env.update({
        "DPO_SCALE_BENCH_OUT": str(out / "ranks"),
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": str(opts.threads), "TOKENIZERS_PARALLELISM": "false",
    })
    log = out / "launch.log"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=opts.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its ranks (same session)
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - started
    ranks = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank*.json"))]
    if rc != 0 or len(ranks) != processes:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"case {name} failed (exit {rc}, {len(ranks)}/{processes} rank results):\n{tail}")
    bad = [r["rank"] for r in ranks if r["torch_world_size"] != processes]
    if bad:
        raise RuntimeError(f"case {name}: ranks {bad} ran alone (world size != {processes}): not one job")
    ranks.sort(key=lambda r: r["rank"])
    return {"case": name, "profile": profile, "processes": processes, "wall_s": round(wall, 1), "ranks": ranks,
            "tokens_per_s_total": sum(r["tokens_per_s"] for r in ranks),
            "param_bytes_held_mean": sum(r["param_bytes_held"] for r in ranks) / processes}


def mb(n: float) -> float:
    return n / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per case (the first is not timed)")
    ap.add_argument("--batch", type=int, default=2, help="per-device batch (pairs)")
    ap.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank (OMP_NUM_THREADS)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per case")
    opts = ap.parse_args()
    cases = [c.strip() for c in opts.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown} (known: {', '.join(CASES)})")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="dpo_scale_scaling_") as tmp:
        tmp = Path(tmp)
        model_path, data, names = prepare(opts.model, tmp)
        for name in cases:
            print(f"running {name} ...", flush=True)
            rows[name] = run_case(name, model_path, data, names, tmp, opts)
            print(f"  done in {rows[name]['wall_s']} s", flush=True)

    print(f"\n{'case':8} {'rank':>4} {'params held MB':>14} {'full MB':>8} {'opt state MB':>12} {'master MB':>9} "
          f"{'peak RSS MB':>11} {'s/step':>7} {'tok/s':>8}")
    for name, row in rows.items():
        for r in row["ranks"]:
            print(f"{name:8} {r['rank']:>4} {mb(r['param_bytes_held']):14.2f} {mb(r['param_bytes_full']):8.2f} "
                  f"{mb(r['optimizer_state_bytes']):12.3f} {mb(r['master_weight_bytes']):9.3f} "
                  f"{r['peak_rss_mb']:11.0f} {r['s_per_step']:7.3f} {r['tokens_per_s']:8.1f}")
    figures: dict = {
        "model": ("tiny random Llama (tests.helpers.tiny_model.build_tiny_model hidden=256 layers=4)"
                  if opts.model == "tiny"
                  else "SmolLM2-135M-Instruct (embedded GGUF Q4_1, dequantized)"),
        "settings": {"steps": opts.steps, "timed_steps": opts.steps - 1, "per_device_batch": opts.batch,
                     "gradient_accumulation_steps": opts.accum, "max_length": opts.max_length,
                     "threads_per_rank": opts.threads, "dtype": "float32", "lora": "r16 all-linear",
                     "pairs": "tests.helpers.tiny_model.toy_pairs(64)"},
        "raw": rows,
    }
    if "zero3-1" in rows and "zero3-2" in rows:
        ratio = rows["zero3-2"]["param_bytes_held_mean"] / rows["zero3-1"]["param_bytes_held_mean"]
        figures["zero3_param_memory_ratio_2_vs_1"] = round(ratio, 4)
        print(f"\nZeRO-3 per-rank parameter memory, 2 processes / 1 process: {ratio:.3f}")
    if "single" in rows and "ddp" in rows:
        ratio = rows["ddp"]["param_bytes_held_mean"] / rows["single"]["param_bytes_held_mean"]
        figures["ddp_param_memory_ratio_2_vs_1"] = round(ratio, 4)
        print(f"DDP per-rank parameter memory, 2 processes / 1 process: {ratio:.3f} (full replica per rank)")
    for multi, single in (("ddp", "single"), ("zero3-2", "zero3-1")):
        if multi in rows and single in rows:
            ratio = rows[multi]["tokens_per_s_total"] / rows[single]["tokens_per_s_total"]
            figures[f"{multi}_vs_{single}_tokens_per_s_ratio"] = round(ratio, 3)
            print(f"tokens/s, {multi} (all ranks) / {single}: {ratio:.2f}")
    print("written:", save_result("scaling", figures))


if __name__ == "__main__":
    main()
