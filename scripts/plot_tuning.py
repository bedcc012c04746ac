"""Plot what was tried on the tuning sets: identity against first sentences kept, one point per run, the targets
as lines (issue 15). Reads docs/tuning_runs.csv (scripts/tune_eval.py's figures, one row per run; the runs are
described in docs/experiments.md).

    python scripts/plot_tuning.py [--csv docs/tuning_runs.csv] [--out runs/tuning_tradeoff.png]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IDENTITY_TARGET, FIRST_SENTENCE_TARGET = 0.95, 0.80


def read_runs(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        for key in ("identity_system_prompt", "identity_own_template", "first_sentences_kept", "kl_per_token"):
            try:
                row[key] = float(row[key])
            except (TypeError, ValueError):
                raise SystemExit(f"{path}: line {i}, field {key}: not a number: {row.get(key)!r}") from None
    return rows


def plot(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.5))
    floor = 75.0  # identity axis floor: runs below it are named at the bottom instead of squeezing the rest
    at: dict[tuple[float, float], list[str]] = {}  # runs on the same point share one label
    for row in rows:
        default = row["run"].startswith("default")
        x, y = row["first_sentences_kept"] * 100, row["identity_system_prompt"] * 100
        ax.scatter(x, max(y, floor + 0.5), s=70 if default else 40, marker="s" if default else "o",
                   color="tab:blue" if default else "tab:gray", zorder=3)
        at.setdefault((x, max(y, floor + 0.5)), []).append(row["run"] if y >= floor else f"{row['run']} ({y:.0f}%)")
    for (x, y), names in at.items():
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_ylim(floor, 100)
    ax.axhline(IDENTITY_TARGET * 100, color="tab:red", linestyle="--", linewidth=1)
    ax.axvline(FIRST_SENTENCE_TARGET * 100, color="tab:red", linestyle="--", linewidth=1)
    ax.text(0.01, 0.97, "dashed: the targets (on the report sets): identity ≥ 95%, first sentences ≥ 80%",
            transform=ax.transAxes, color="tab:red", fontsize=8)
    ax.set_xlabel("ordinary prompts: first sentence kept (%) — tuning sets, 140 prompts")
    ax.set_ylabel('identity behind the system prompt: "Deep SmolLM" (%) — 100 questions')
    ax.set_title("What was tried on the tuning sets (squares: the default's own runs)")
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=REPO / "docs" / "tuning_runs.csv")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "tuning_tradeoff.png")
    args = ap.parse_args()
    print("written:", plot(read_runs(args.csv), args.out))


if __name__ == "__main__":
    main()
