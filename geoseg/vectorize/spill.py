"""Frontier data parked on disk while it waits for the rest of its blocks.

Whatever waits in the reduction (road cell parts, large object fragments) sits on the frontier between done
and not-done blocks, which is O(scene width) for any block order. Held in RAM it makes peak memory grow with
the scene, and, interleaved with the per-block working arrays, it fragments the heap so freed memory is not
given back. Parked here it costs the page cache (not RSS) and a little disk: each array set is one file
(:func:`write_arrays`) in a private temporary folder, deleted as soon as it is read back; the folder goes when
the run ends (or the reducer is garbage-collected, or the interpreter exits).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from geoseg.tempfiles import frontier_prefix  # names the owner: a killed run's folder is removed later

ARRAYS_SUFFIX = ".arrays"  # the array-set files of this module: parts on the frontier and the vector parts

# An array set is a little-endian 8-byte header length, a JSON list of (name, dtype, shape), then each array's
# raw C-order bytes: hand-written because numpy's .npz (a zip, one ast-parsed header per array) is several times
# slower to write and to read for the small crops and parts that make up most of these files.


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` (no object arrays) as one array-set file."""
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"array {name!r}: object arrays are not stored")
    head = json.dumps([(name, a.dtype.str, a.shape) for name, a in arrays.items()]).encode()
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for a in arrays.values():
            f.write(a.data)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an array-set file (writable: they share one buffer read in a single call)."""
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    n = int.from_bytes(buf[:8], "little")
    meta = json.loads(buf[8:8 + n])
    sizes = [math.prod(shape) * np.dtype(dtype).itemsize for _, dtype, shape in meta]
    if 8 + n + sum(sizes) != len(buf):
        raise ValueError(f"{path}: not an array-set file ({len(buf)} bytes, {8 + n + sum(sizes)} expected)")
    out, pos = {}, 8 + n
    for (name, dtype, shape), size in zip(meta, sizes):
        out[name] = np.frombuffer(buf, np.dtype(dtype), math.prod(shape), pos).reshape(shape)
        pos += size
    return out


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
        path = self.folder / f"{self.count}{ARRAYS_SUFFIX}"
        self.count += 1
        write_arrays(path, arrays)
        return path

    def take(self, path: Path) -> dict[str, np.ndarray]:
        arrays = read_arrays(path)
        path.unlink()
        return arrays

    def close(self) -> None:
        """Remove the folder (and anything still parked in it)."""
        if self._cleanup is not None:
            self._cleanup()
