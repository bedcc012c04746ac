"""A real Slurm cluster on this machine for the template tests (scripts/slurm_cluster.py).

`slurm`: one node (localhost), started once per session. `slurm_two_nodes`: two slurmd, each in a
network namespace of its own, joined by a veth pair. Both install Debian's packages when missing and
skip (with the reason) where that is impossible: not root, no apt-get, no network namespaces.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"


def _load_helper():
    spec = importlib.util.spec_from_file_location("slurm_cluster", REPO / "scripts" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["slurm_cluster"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


slurm_cluster = _load_helper()


def _start(tmp_path_factory, name: str, nodes: int):
    started = time.time()
    try:
        cluster = slurm_cluster.start_cluster(tmp_path_factory.mktemp(name), nodes=nodes)
    except slurm_cluster.Unavailable as e:
        pytest.skip(f"no Slurm cluster with {nodes} node(s) on this machine: {e}")
    print(f"\nslurm: {nodes}-node cluster up in {time.time() - started:.1f} s ({cluster.conf})")
    return cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    cluster = _start(tmp_path_factory, "slurm", 1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def slurm_two_nodes(tmp_path_factory):
    cluster = _start(tmp_path_factory, "slurm2", 2)
    yield cluster
    cluster.stop()
