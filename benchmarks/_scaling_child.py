"""One rank of a benchmarks/scaling.py run: the normal `dpo_scale.train` entry point, measured from inside.

Started by scaling.py as `python -m accelerate.commands.launch --config_file launch/<profile>.yaml ...
-m benchmarks._scaling_child <train.py arguments>`. It runs `dpo_scale.train.main` unchanged (same
DeepSpeed/ZeRO-Init set-up, same LoRA adapter-off reference) with one addition: `trl.DPOTrainer` is replaced,
for this process only, by a subclass that adds a TrainerCallback and counts the tokens of each micro-batch.
dpo_scale.train imports DPOTrainer from trl inside train(), so it picks the subclass up; nothing in the package
changes. Each rank writes `<DPO_SCALE_BENCH_OUT>/rank<R>.json` when training ends:

  param_bytes_held    parameter memory this rank holds: under ZeRO-3 its partition of every parameter
                      (`p.ds_tensor`) plus any gathered full copy still in place (persistent small params);
                      otherwise the bytes of every parameter
  param_bytes_full    the whole model's parameters (what one unpartitioned copy takes)
  optimizer_state_bytes   the optimizer's state tensors (Adam moments and step counters), on this rank
  master_weight_bytes DeepSpeed's fp32 master partitions of the trainable parameters (0 outside DeepSpeed)
  peak_rss_mb         this process's peak resident set (ru_maxrss), model loading included
  s_per_step, tokens_per_s  over the timed optimizer steps (all but the first, which is warm-up)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def param_memory(model) -> dict:
    held = full = 0
    partitioned = 0
    for p in model.parameters():  # deduplicated: tied embeddings count once
        size = p.element_size()
        if hasattr(p, "ds_tensor"):  # a ZeRO-3 partitioned parameter
            partitioned += 1
            held += p.ds_tensor.numel() * p.ds_tensor.element_size() + p.data.numel() * size
            full += p.ds_numel * size
        else:
            held += p.numel() * size
            full += p.numel() * size
    return {"param_bytes_held": held, "param_bytes_full": full, "partitioned_params": partitioned}


def _tensor_bytes(tensors, seen: set) -> int:
    import torch

    total = 0
    for t in tensors:
        if torch.is_tensor(t) and t.numel() and (t.data_ptr(), t.numel()) not in seen:
            seen.add((t.data_ptr(), t.numel()))
            total += t.numel() * t.element_size()
    return total


def optimizer_memory(optimizer) -> dict:
    """Walk accelerate's wrapper -> (DeepSpeed ZeRO optimizer ->) torch optimizer; count each tensor once."""
    seen: set = set()
    state = master = 0
    opt, depth = optimizer, 0
    while opt is not None and depth < 6:
        st = getattr(opt, "state", None)
        if isinstance(st, dict):
            for entry in st.values():
                if isinstance(entry, dict):
                    state += _tensor_bytes(entry.values(), seen)
        for name in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):
            master += _tensor_bytes(getattr(opt, name, None) or [], seen)
        opt, depth = getattr(opt, "optimizer", None), depth + 1
    return {"optimizer_state_bytes": state, "master_weight_bytes": master}


def install_probe(out_dir: Path) -> None:
    import trl
    from transformers import TrainerCallback

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    probe = {"tokens": [], "padded_tokens": [], "step_s": [], "step_tokens": [], "t0": None, "tok0": 0}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            probe["at_train_begin"] = param_memory(model)

        def on_step_begin(self, args, state, control, **kw):
            probe["t0"] = time.perf_counter()
            probe["tok0"] = sum(probe["tokens"])

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            probe["step_s"].append(time.perf_counter() - probe["t0"])
            probe["step_tokens"].append(sum(probe["tokens"]) - probe["tok0"])
            probe["last"] = {**param_memory(model), **optimizer_memory(optimizer)}

        def on_train_end(self, args, state, control, **kw):
            import torch.distributed as dist

            timed_s = probe["step_s"][1:] or probe["step_s"]
            timed_tok = probe["step_tokens"][1:] or probe["step_tokens"]
            result = {
                "rank": rank, "world_size": world,
                "torch_world_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
                "steps": state.global_step, "timed_steps": len(timed_s),
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                **probe["last"],
                "param_bytes_held_at_train_begin": probe["at_train_begin"]["param_bytes_held"],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "step_s": [round(s, 4) for s in probe["step_s"]],
                "s_per_step": sum(timed_s) / len(timed_s),
                "tokens_per_step": sum(timed_tok) / len(timed_tok),
                "tokens_per_s": sum(timed_tok) / sum(timed_s),
                "tokens_total": sum(probe["tokens"]), "padded_tokens_total": sum(probe["padded_tokens"]),
                "threads": __import__("torch").get_num_threads(),
            }
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=2) + "\n")

    base = trl.DPOTrainer

    class MeasuredDPOTrainer(base):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), Probe()], **kwargs)

        def training_step(self, model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            probe["tokens"].append(int(mask.sum()) if mask is not None else inputs["input_ids"].numel())
            probe["padded_tokens"].append(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *args, **kwargs)

    trl.DPOTrainer = MeasuredDPOTrainer  # dpo_scale.train does `from trl import DPOTrainer` at call time


def main() -> int:
    out = os.environ.get("DPO_SCALE_BENCH_OUT")
    if not out:
        print("benchmarks._scaling_child: set DPO_SCALE_BENCH_OUT (run benchmarks/scaling.py)", file=sys.stderr)
        return 2
    install_probe(Path(out))
    from dpo_scale.train import main as train_main

    return train_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
