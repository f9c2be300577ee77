"""The malloc policy: large buffers are reused between 'forwards' instead of being faulted in again, worker
processes inherit it, and GEOSEG_MALLOC=system turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geoseg import allocator

glibc = pytest.mark.skipif(allocator._mallopt() is None, reason="the policy is glibc's; nothing to tune elsewhere")

# a worker thread allocates, writes and frees 3 x 48 MB torch buffers 10 times, like model forwards; prints the
# resident MB this process gained in the first round and over the eight after the second (torch's first round
# also leaves a few small allocations behind, so the second may still grow the heap once)
ROUNDS = """
import json, threading
import torch
from geoseg.allocator import tune_malloc
applied = tune_malloc()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
def forward():
    bufs = [torch.empty(12 << 20) for _ in range(3)]
    for b in bufs:
        b.fill_(1.0)
seen = [rss_mb()]
def work():
    for _ in range(10):
        forward()
        seen.append(rss_mb())
t = threading.Thread(target=work)
t.start()
t.join()
print(json.dumps({"applied": applied, "kept_mb": seen[1] - seen[0], "grew_mb": seen[-1] - seen[2]}))
"""


def _rounds(policy: str) -> dict:
    """The rounds in a process started as a local worker is (with the policy's environment) or, for "system", as
    a user who never set them: a local cluster started earlier in this process leaves the policy's variables in
    os.environ (distributed sets pre-spawn-environ in the nanny's own process)."""
    policy_vars = {var for _, var, _ in allocator.POLICY.values()} | {"THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES"}
    env = {k: v for k, v in os.environ.items() if k not in policy_vars}
    env["GEOSEG_MALLOC"] = policy
    if policy != "system":
        env.update(allocator.worker_environ())
    out = subprocess.run([sys.executable, "-c", ROUNDS], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.slow
@glibc
def test_policy_keeps_large_buffers_for_the_next_forward() -> None:
    """glibc's default gives a worker thread's 48 MB buffers back on free (the next forward faults them in
    again); with the policy they stay in the heap, which stops growing after the second round (with glibc's
    tcache on, torch's aligned allocations grew it for 4-7 rounds)."""
    tuned, system = _rounds("geoseg"), _rounds("system")
    assert tuned["applied"] and not system["applied"]
    assert system["kept_mb"] < 20 and abs(system["grew_mb"]) < 10
    assert tuned["kept_mb"] > 120
    assert abs(tuned["grew_mb"]) < 10


def test_system_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_MALLOC", "system")
    assert not allocator.enabled()
    assert allocator.worker_environ() == {}
    monkeypatch.delenv("GEOSEG_MALLOC")
    assert allocator.enabled()


@glibc
def test_local_worker_processes_inherit_the_policy() -> None:
    from geoseg.engine import dask_client

    with dask_client("processes", 1) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in allocator.worker_environ()})
    (env,) = seen.values()
    assert {k: env[k] for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")} == \
        {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    assert allocator.TCACHE_TUNABLE in (env["GLIBC_TUNABLES"] or "").split(":")  # read when the worker started


def test_users_tunables_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert allocator._tunables_environ() == {"GLIBC_TUNABLES": f"glibc.malloc.hugetlb=1:{allocator.TCACHE_TUNABLE}"}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=3")  # the user's own choice wins
    assert allocator._tunables_environ() == {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3"}
