"""Temporary names that say which process owns them, and the removal of those a killed run left behind.

Every temporary output (``.NAME.tmp-<owner>.<random>SUFFIX``: files, staging rasters, run-private parts folders)
and every frontier folder in TMPDIR (``geoseg-frontier-<owner>.<random>``) carries its owner: a hash of the host
name, the process id and that process's start time. An entry is stale only when its owner is on this host and
that process no longer runs (a recycled pid has another start time), so a live run's files, on this host or on
another one sharing the folder, are never touched. A pid check rather than a lock file: nothing extra is left in
the output folder, and the kernel's own process table is the record, even after SIGKILL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FRONTIER_PREFIX = "geoseg-frontier-"
_OWNER = re.compile(r"\.tmp-(?P<host>[0-9a-f]{6})\.(?P<pid>\d+)\.(?P<start>\d+)\.")
_FRONTIER = re.compile(rf"{FRONTIER_PREFIX}(?P<host>[0-9a-f]{{6}})\.(?P<pid>\d+)\.(?P<start>\d+)\.")


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat; the first two (pid, comm) are before the split
    except (OSError, IndexError, ValueError):
        return None


def owner() -> str:
    """This process's owner token, ``<host>.<pid>.<start time>`` (start 0 where /proc is not available)."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{_start_time(pid) or 0}"


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same filesystem, so the final rename is atomic), owned by us."""
    return path.with_name(f".{path.name}.tmp-{owner()}.{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write to the yielded temporary name beside ``path``; it is renamed to ``path`` when the body completes and
    removed when the body raises, so ``path`` is either the old file or the new complete one (the
    nothing-half-written invariant). A file or a folder; a killed run's leftover is removed by
    :func:`remove_stale`."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def frontier_prefix() -> str:
    """``tempfile.mkdtemp`` prefix for a run's frontier folder in TMPDIR."""
    return f"{FRONTIER_PREFIX}{owner()}."


def _dead(match: re.Match[str] | None) -> bool:
    """Whether the owner named by ``match`` is a process of this host that has ended."""
    if match is None or match["host"] != _host():
        return False  # another host's run (or a name we did not write): never ours to judge
    pid, start = int(match["pid"]), int(match["start"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return start != 0 and _start_time(pid) not in (None, start)  # the pid was recycled by a newer process


def _remove(path: Path) -> int:
    """Delete a file or folder; returns the bytes freed (0 if another cleaner was first)."""
    try:
        if path.is_dir() and not path.is_symlink():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
            return size
        size = path.lstat().st_size
        path.unlink()
        return size
    except FileNotFoundError:
        return 0


def remove_stale(folders: list[Path]) -> tuple[int, int]:
    """Remove what killed runs left in ``folders`` (temporary outputs) and in TMPDIR (frontier folders).

    Returns (entries removed, bytes freed). Only entries whose owner process has ended are touched.
    """
    count = freed = 0
    candidates = [(p, _OWNER.search(p.name)) for folder in dict.fromkeys(folders) if folder.is_dir()
                  for p in folder.glob(".*.tmp-*")]
    tmp = Path(tempfile.gettempdir())
    candidates += [(p, _FRONTIER.match(p.name)) for p in tmp.glob(f"{FRONTIER_PREFIX}*")]
    for path, match in candidates:
        if _dead(match):
            try:
                freed += _remove(path)
                count += 1
            except OSError as err:  # a file we may not delete: say so, do not fail the run
                logging.getLogger("geoseg").warning("%s: left by an interrupted run, cannot remove it (%s)", path,
                                                    err.strerror)
    return count, freed
