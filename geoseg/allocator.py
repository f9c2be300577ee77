"""glibc malloc policy for model workers: keep the model's activation buffers in one heap between forwards.

PyTorch's CPU tensors come from ``malloc``. glibc serves the large ones (tens of MB per activation) with a
fresh ``mmap`` each time and unmaps them on ``free``, so every forward faults in and zeroes its whole working
set again, even with huge pages, and the kernel's time rivals the model's (figures in the README's Benchmarks).
With one arena, and mmap and trim thresholds above any single buffer, freed buffers stay in the heap and the
next forward reuses them. Every setting is needed: without the single arena, worker threads allocate from
64 MB sub-heaps, which cannot hold these buffers, so they are still mmapped. Worker processes also start with
glibc's per-thread cache off (:func:`_tunables_environ`), without which the heap grows for several forwards
before the reuse starts.

The policy must be set before worker threads first allocate, so the CLI sets it at start-up and local worker
processes inherit it through their environment (Python API: call :func:`tune_malloc` first thing; workers of
a remote cluster: start them with :func:`worker_environ`'s variables). ``GEOSEG_MALLOC=system`` keeps
glibc's defaults. Nothing is hand-written here beyond setting glibc's documented tunables (``mallopt``,
``MALLOC_*_`` variables, ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from typing import Any, Callable

from geoseg.startup import thp_set_by_user

_ONE_GB = 1 << 30
# mallopt parameter numbers (malloc.h) and the environment variables glibc reads at start-up for each
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
POLICY = {  # (mallopt parameter, environment variable, value)
    "arena_max": (_M_ARENA_MAX, "MALLOC_ARENA_MAX", 1),
    "mmap_threshold": (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", _ONE_GB),
    "trim_threshold": (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", _ONE_GB),
}
TCACHE_TUNABLE = "glibc.malloc.tcache_count=0"  # see _tunables_environ


def enabled() -> bool:
    """False when the user asked for glibc's defaults (``GEOSEG_MALLOC=system``)."""
    return os.environ.get("GEOSEG_MALLOC", "").strip().lower() != "system"


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A glibc function, or None where there is no glibc (macOS, musl): then there is nothing to tune."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _mallopt() -> Callable[[int, int], int] | None:
    fn: Any = _glibc("mallopt")
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def _thp_environ() -> dict[str, str]:
    """PyTorch's huge-page allocations are 2 MB-aligned: in a heap that keeps its buffers they leave holes, and
    glibc does not reuse them (the heap grows by a buffer's size every forward), so the policy turns them off
    unless the user chose a setting. Read at torch's first allocation."""
    return {} if thp_set_by_user() else {"THP_MEM_ALLOC_ENABLE": "0"}


@functools.cache
def tune_malloc() -> bool:
    """Apply the policy to this process (once); True if it was applied."""
    fn = _mallopt() if enabled() else None
    if fn is None:
        return False
    os.environ.update(_thp_environ())
    return all(fn(param, value) == 1 for param, _, value in POLICY.values())


def _tunables_environ() -> dict[str, str]:
    """PyTorch allocates its buffers with ``posix_memalign``, which splits a small remainder off each chunk; in
    the per-thread cache (tcache) those remainders are never coalesced, so they keep the freed buffers apart and
    the heap grows by a working set per forward for several forwards, each page faulted in. Without the tcache
    glibc coalesces them and the second forward reuses the first one's memory. A tunable, so read only when a
    process starts: worker processes get it; the user's own ``GLIBC_TUNABLES`` are kept, and win."""
    user = os.environ.get("GLIBC_TUNABLES", "")
    if TCACHE_TUNABLE.split("=")[0] in user:  # the user's choice, or ours from an earlier cluster start
        return {"GLIBC_TUNABLES": user}
    return {"GLIBC_TUNABLES": f"{user}:{TCACHE_TUNABLE}" if user else TCACHE_TUNABLE}


def worker_environ() -> dict[str, str]:
    """The same policy as environment variables, for worker processes started by this one (empty when off)."""
    if not enabled() or _mallopt() is None:
        return {}
    return {**{var: str(value) for _, var, value in POLICY.values()}, **_thp_environ(), **_tunables_environ()}


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``, as Dask's docs advise for workers).

    Blocks and cells allocate and free arrays of a few MB; glibc keeps freed heap memory mapped, and with
    long-lived objects (frames waiting to be written) in between, the resident size would creep up with the
    number of blocks instead of staying at one block's working set.
    """
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


class HeapTrim:
    """:func:`trim_heap` at most every ``every_s`` seconds (0: every call; None: never).

    A trim also hands back the model's freed activation buffers, which the next forward must fault in again, so
    ``infer`` trims every 30 s rather than after every block.
    """

    def __init__(self, every_s: float | None) -> None:
        self.every_s, self.last = every_s, time.monotonic()

    def maybe(self) -> None:
        if self.every_s is not None and time.monotonic() - self.last >= self.every_s:
            trim_heap()
            self.last = time.monotonic()
