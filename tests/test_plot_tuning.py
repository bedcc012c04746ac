"""scripts/plot_tuning.py draws docs/tuning_runs.csv, and names the line and field of a bad number."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "plot_tuning.py"


def load_script():
    spec = importlib.util.spec_from_file_location("plot_tuning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plots_the_shipped_runs(tmp_path):
    plot_tuning = load_script()
    rows = plot_tuning.read_runs(SCRIPT.parent.parent / "docs" / "tuning_runs.csv")
    assert any(row["run"].startswith("default") for row in rows)
    assert all(0 <= row["identity_system_prompt"] <= 1 for row in rows)
    out = plot_tuning.plot(rows, tmp_path / "tradeoff.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_number_names_its_line_and_field(tmp_path):
    plot_tuning = load_script()
    bad = tmp_path / "runs.csv"
    bad.write_text("run,identity_system_prompt,identity_own_template,first_sentences_kept,kl_per_token\n"
                   "a,0.9,0.9,0.7,0.002\n"
                   "b,0.9,n/a,0.7,0.002\n")
    with pytest.raises(SystemExit, match="line 3, field identity_own_template"):
        plot_tuning.read_runs(bad)
