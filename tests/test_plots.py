"""Training curves: the anchor KL on its own log-scale axis, the KL budget drawn when given."""

import matplotlib.pyplot as plt
import pytest

from dpo_scale.plots import plot_training, training_figure

METRICS = [{"step": s, "loss": 7.0 / s, "anchor_kl": 0.002 * s, "rewards/margins": 0.1 * s} for s in range(1, 6)]


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_anchor_kl_has_its_own_log_axis_and_the_budget_line():
    fig = training_figure(METRICS, kl_budget=0.005)
    try:
        ax_loss, ax_reward, ax_kl = fig.axes
        assert ax_loss.get_yscale() == "linear" and ax_kl.get_yscale() == "log"
        assert ax_kl.get_shared_x_axes().joined(ax_kl, ax_loss)  # the twin of the loss axis, same steps
        assert set(lines_by_label(ax_loss)) == {"loss"}
        kl_lines = lines_by_label(ax_kl)
        assert list(kl_lines["anchor KL"].get_ydata()) == pytest.approx([0.002 * s for s in range(1, 6)])
        budget = kl_lines["KL budget 0.005"]
        assert list(budget.get_ydata()) == [0.005, 0.005]
        # the KL is readable: its axis spans its own range, not the loss's
        low, high = ax_kl.get_ylim()
        assert low < 0.002 and 0.005 < high < 0.1
        assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["loss", "anchor KL", "KL budget 0.005"]
    finally:
        plt.close(fig)


def test_no_kl_axis_without_kl_and_no_budget_line_without_budget():
    fig = training_figure([{k: v for k, v in m.items() if k != "anchor_kl"} for m in METRICS], kl_budget=0.005)
    try:
        assert len(fig.axes) == 2
    finally:
        plt.close(fig)
    fig = training_figure(METRICS)
    try:
        assert set(lines_by_label(fig.axes[2])) == {"anchor KL"}
    finally:
        plt.close(fig)


def test_plot_training_writes_a_png(tmp_path):
    assert plot_training([{"step": 1}], tmp_path / "none.png") is None
    png = plot_training(METRICS, tmp_path / "curves.png", kl_budget=0.005)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
