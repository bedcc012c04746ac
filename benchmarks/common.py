"""Shared bits of the benchmarks: machine description and result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """The host: CPU model and the flags that decide its fast precisions (avx2, avx512f, avx512_bf16, amx_bf16)."""
    import torch

    from dpo_scale.precision import cpu_info

    host = cpu_info()
    info = {"cpu": host["cpu"], "cpu_flags": host["flags"], "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        load = os.getloadavg()
        info["load_avg_1m_at_start"] = round(load[0], 2)
    except OSError:
        pass
    return info


def save_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(), **figures}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    return out
