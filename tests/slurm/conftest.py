"""A real Slurm cluster on this machine for the template tests (tests/helpers/slurm_cluster.py).

`slurm`: one node (localhost) with 2 fake GPUs, started once per session. `slurm_cpu_only`: one node
configured without GPUs (no gres), as a CPU cluster is. `slurm_two_nodes`: two slurmd, each in a
network namespace of its own, joined by a veth pair. Both install Debian's packages when missing and
skip (with the reason) where that is impossible: not root, no apt-get, no network namespaces.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import slurm_cluster


def _start(tmp_path_factory, name: str, nodes: int, gpus: int = 2):
    started = time.time()
    try:
        cluster = slurm_cluster.start_cluster(tmp_path_factory.mktemp(name), nodes=nodes, gpus=gpus)
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


@pytest.fixture(scope="session")
def slurm_cpu_only(tmp_path_factory):
    cluster = _start(tmp_path_factory, "slurm_cpu", 1, gpus=0)
    yield cluster
    cluster.stop()
