"""PNG curves of a training run (loss, anchor KL and reward margins over optimizer steps)."""

from __future__ import annotations

from pathlib import Path

from dpo_scale.io import atomic_path


def training_figure(metrics: list[dict], title: str = "DPO training", kl_budget: float | None = None):
    """The figure of `plot_training`, or None without loss rows. The anchor KL (~1e-3) sits on its own log-scale
    axis to the right of the loss (~1), with the KL budget as a horizontal line when one is given."""
    rows = [m for m in metrics if "loss" in m and "step" in m]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in rows]
    fig, (ax_loss, ax_reward) = plt.subplots(1, 2, figsize=(11, 4))
    lines = ax_loss.plot(steps, [m["loss"] for m in rows], marker=".", label="loss")
    kl = [(m["step"], m["anchor_kl"]) for m in rows if "anchor_kl" in m]
    if kl:  # the KL anchor's term, unweighted (dpo_scale/anchor_kl.py)
        ax_kl = ax_loss.twinx()
        ax_kl.set_yscale("log")
        lines += ax_kl.plot(*zip(*kl, strict=True), marker=".", color="tab:orange", label="anchor KL")
        if kl_budget is not None:
            lines.append(ax_kl.axhline(kl_budget, color="tab:red", linestyle="--", label=f"KL budget {kl_budget:g}"))
        ax_kl.set_ylabel("anchor KL (log scale)")
        ax_loss.legend(lines, [line.get_label() for line in lines])
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    for key, label in (("rewards/margins", "margin"), ("rewards/chosen", "chosen"),
                       ("rewards/rejected", "rejected"), ("rewards/accuracies", "accuracy")):
        pts = [(m["step"], m[key]) for m in rows if key in m]
        if pts:
            ax_reward.plot(*zip(*pts, strict=True), marker=".", label=label)
    ax_reward.set_xlabel("optimizer step")
    ax_reward.set_title("implicit rewards")
    ax_reward.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training(metrics: list[dict], png: str | Path, title: str = "DPO training",
                  kl_budget: float | None = None) -> Path | None:
    fig = training_figure(metrics, title, kl_budget)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(png)
