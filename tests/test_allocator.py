"""dpo_scale.allocator: freed tensor memory stays in the process (fewer page faults), in the process that applies the
settings and in the processes it starts; left alone where the user chose otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from dpo_scale.allocator import ENV, OPT_OUT, skip_reason

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")

# Allocates, touches and frees a 64 MiB tensor 20 times, as a training step does its activations, after 20 times
# to warm up (the heap grows for the first few, now and then later: torch's aligned allocations do not always fit
# the chunk freed just before);
# prints the minor page faults of the 20.
FAULTS = """
import resource, sys, torch
if sys.argv[1] == "apply":
    from dpo_scale.allocator import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "spawn":  # apply here, measure in a child that does nothing itself
    import subprocess
    from dpo_scale.allocator import keep_freed_memory
    assert keep_freed_memory()
    print(subprocess.run([sys.executable, "-c", sys.argv[2], "plain", sys.argv[2]], capture_output=True,
                         text=True, check=True).stdout.strip())
    sys.exit()
def step():
    t = torch.empty(16 * 1024 * 1024)
    t.fill_(1.0)
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != OPT_OUT}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode, FAULTS], capture_output=True, text=True, env=env,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_freed_tensors_are_reused_instead_of_faulted_in_again():
    pages = 64 * 1024 * 1024 // 4096
    plain, kept = _faults("plain"), _faults("apply")
    assert plain > 10 * pages  # glibc's defaults: each 64 MiB tensor is a fresh mmap, faulted in page by page
    assert kept < 5 * pages  # kept in the heap and reused (0 to 2 of the 20 faulted in, measured)


@glibc_only
def test_processes_started_after_it_inherit_the_settings():
    assert _faults("spawn") < 5 * 64 * 1024 * 1024 // 4096  # glibc's defaults: 20 times that


@glibc_only
@pytest.mark.parametrize(("env", "reason"), [
    ({OPT_OUT: "system"}, f"{OPT_OUT}=system"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "LD_PRELOAD has another malloc"),
    ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX set by the user"),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "MALLOC_MMAP_THRESHOLD_ set by the user"),
])
def test_left_alone_where_the_user_chose(env, reason):
    assert reason in skip_reason(env)


@glibc_only
def test_applied_on_a_plain_environment_and_under_its_own_settings():
    assert skip_reason({"PATH": "/usr/bin"}) is None
    assert skip_reason(dict(ENV)) is None  # a child of a process that applied them


@glibc_only
def test_freed_memory_is_given_back_between_stages():
    """With the settings on, freed memory stays in the heap (resident) until release_freed_memory gives it back."""
    code = """
import torch
from dpo_scale.allocator import keep_freed_memory, release_freed_memory
def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
assert keep_freed_memory()
torch.ones(1)
start = resident_mib()
t = torch.ones(64 * 2**20)  # 256 MiB
del t
kept = resident_mib()
release_freed_memory()
print(start, kept, resident_mib())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != OPT_OUT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    start, kept, released = map(int, out.stdout.split())
    assert kept - start > 200  # freed, but held by the heap
    assert released - start < 50
