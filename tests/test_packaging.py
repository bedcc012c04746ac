"""What a `pip install` user gets: declared dependencies that match what the code imports and what is tested,
launch profiles and recipes found by name from any folder, and no test-only code inside the package."""

import ast
import configparser
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dpo_scale.errors import DpoScaleError

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "dpo_scale"
# Declared, used at run time, never imported by name.
USED_NOT_IMPORTED = {"gguf": "transformers' GGUF loader", "tensorboard": "report_to: tensorboard in the recipes"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def install_requires() -> dict[str, Requirement]:
    return {_norm(r.name): r for r in _requirements(_setup_cfg()["options"]["install_requires"])}


def extras_require() -> dict[str, Requirement]:
    cfg = _setup_cfg()
    return {_norm(r.name): r for extra in cfg["options.extras_require"].values() for r in _requirements(extra)}


def third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> files of dpo_scale/ that import it (stdlib and dpo_scale itself left out)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("dpo_scale", "__future__"):
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_is_declared():
    declared = set(install_requires()) | set(extras_require())
    owners = packages_distributions()
    missing = []
    for module, files in third_party_imports().items():
        dists = {_norm(d) for d in owners.get(module, [])}
        assert dists, f"{module} (imported by {files[0]}) is not installed in the test environment"
        if not dists & declared:
            missing.append(f"{module} ({'/'.join(sorted(dists))}, imported by {files[0]})")
    assert not missing, f"imported but not declared in setup.cfg: {', '.join(missing)}"


def test_every_required_distribution_is_imported_or_named_as_used():
    owners = packages_distributions()
    imported = {_norm(d) for module in third_party_imports() for d in owners.get(module, [])}
    unused = set(install_requires()) - imported - set(USED_NOT_IMPORTED)
    assert not unused, f"declared in install_requires but never imported: {sorted(unused)}"


def test_tested_versions_satisfy_the_declared_ranges():
    """The floors are versions this environment has (so they were tested), and transformers must be 5.x:
    4.x reads train.py's fractional warmup_steps as a step count."""
    for name, req in {**install_requires(), **extras_require()}.items():
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            continue  # an extra not installed here (vllm for CUDA, liger-kernel)
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} does not satisfy {req}"
    transformers = install_requires()["transformers"].specifier
    assert not transformers.contains("4.57.3") and not transformers.contains("4.99")
    assert install_requires()["torch"].specifier.contains(version("torch"))


def test_no_test_code_in_the_package():
    assert not (PACKAGE / "testing.py").exists()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) tests\b", text, re.M), f"{path} imports test code"


def test_profiles_and_recipes_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from dpo_scale.resources import (
        launch_profile_names,
        launch_profile_path,
        recipe_names,
        recipe_path,
        recipes_dir,
    )

    monkeypatch.chdir(tmp_path)
    assert {"cpu", "ddp", "zero2", "zero3", "zero3_offload"} <= set(launch_profile_names())
    assert {"smollm2_cpu", "qwen2.5_0.5b_gpu"} <= set(recipe_names())
    assert launch_profile_path("ddp").read_text() == (REPO / "launch" / "ddp.yaml").read_text()
    for name in ("smollm2_cpu", "smollm2_cpu.yaml"):
        assert recipe_path(name).read_text() == (REPO / "configs" / "smollm2_cpu.yaml").read_text()
    # A file of that name in the working folder wins over the packaged recipe.
    (tmp_path / "smollm2_cpu.yaml").write_text("max_steps: 3\n")
    assert recipe_path("smollm2_cpu.yaml") == Path("smollm2_cpu.yaml")
    assert recipe_path("smollm2_cpu") == recipes_dir() / "smollm2_cpu.yaml"
    with pytest.raises(DpoScaleError, match=r"^nosuch: recipe file not found.*packaged: .*smollm2_cpu"):
        recipe_path("nosuch")
    with pytest.raises(DpoScaleError, match=r"unknown launch profile 'nosuch' \(known: cpu, ddp, "):
        launch_profile_path("nosuch")


def test_cli_resolves_config_by_name(tmp_path):
    """`dpo-scale <stage> --config NAME` from a folder without configs/: the packaged recipe; an unknown name is
    one line listing the packaged ones."""
    ok = subprocess.run([sys.executable, "-m", "dpo_scale", "report", "--config", "smollm2_cpu",
                         "--output_dir", str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-3000:]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "no stage has finished yet" in report  # nothing ran there: nothing from the command line is described
    assert "## Timings" not in report  # no timings.json: stages that ran as separate jobs
    bad = subprocess.run([sys.executable, "-m", "dpo_scale", "train", "--config", "smollm3"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == ("dpo-scale train: error: smollm3: recipe file not found, and "
                                                   "no packaged recipe of that name (packaged: qwen2.5_0.5b_gpu, "
                                                   "smollm2_cpu)")
