"""Frontier data parked on disk while it waits for the rest of its blocks.

Whatever waits in the reduction (road cell parts, large object fragments) sits on the frontier between done
and not-done blocks, which is O(scene width) for any block order. Held in RAM it makes peak memory grow with
the scene, and, interleaved with the per-block working arrays, it fragments the heap so freed memory is not
given back. Parked here it costs the page cache (not RSS) and a little disk: each array set is one ``.npz``
file in a private temporary folder, deleted as soon as it is read back; the folder goes when the run ends (or
the reducer is garbage-collected, or the interpreter exits).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.tempfiles import frontier_prefix  # names the owner: a killed run's folder is removed later

# numpy parses each .npy header with Python's ast, which CPython 3.11 does not make safe across threads
# (python/cpython#106905: "AST constructor recursion depth mismatch" in a worker thread): one reader at a time
_NPZ_LOCK = threading.Lock()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles)."""
    with _NPZ_LOCK, np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}

SPILL_MIN_BYTES = 16 * 1024  # smaller array sets stay in memory: a file each would cost more than it saves


class Spill:
    """One folder of parked array sets; :meth:`put` returns a key that :meth:`take` reads back exactly once."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, min_bytes: int = SPILL_MIN_BYTES) -> None:
        self.parent = folder
        self.min_bytes = min_bytes
        self.folder: Path | None = None
        self.count = 0
        self._cleanup: weakref.finalize | None = None

    def park(self, arrays: dict[str, np.ndarray]) -> Path | None:
        """Put ``arrays`` on disk if they are worth it (``min_bytes`` or more); None if they stay in memory."""
        if sum(a.nbytes for a in arrays.values()) < self.min_bytes:
            return None
        return self.put(arrays)

    def put(self, arrays: dict[str, np.ndarray]) -> Path:
        if self.folder is None:  # created on first use: runs without network classes never touch the disk
            self.folder = Path(tempfile.mkdtemp(prefix=frontier_prefix(), dir=self.parent))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        path = self.folder / f"{self.count}.npz"
        self.count += 1
        savez: Any = np.savez  # (its stubs type keyword arrays as allow_pickle)
        savez(path, **arrays)
        return path

    def take(self, path: Path) -> dict[str, np.ndarray]:
        arrays = read_npz(path)
        path.unlink()
        return arrays

    def close(self) -> None:
        """Remove the folder (and anything still parked in it)."""
        if self._cleanup is not None:
            self._cleanup()
