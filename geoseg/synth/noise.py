"""Deterministic noise: a hash of global integer coordinates, so a pixel is the same in any window."""

from __future__ import annotations

import numpy as np

_C1, _C2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


def _hash(*keys: object) -> np.ndarray:
    """splitmix64 over broadcast integer keys (always arrays, so wrap-around never warns)."""
    h = np.zeros(1, np.uint64)
    for key in keys:
        k = np.atleast_1d(np.asarray(key)).astype(np.int64).astype(np.uint64)
        x = h ^ (k + _GOLD)
        x = (x ^ (x >> _S30)) * _C1
        x = (x ^ (x >> _S27)) * _C2
        h = x ^ (x >> _S31)
    return h


def _unit(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _grid_noise(seed: int, salt: int, rows: np.ndarray, cols: np.ndarray, cell: float) -> np.ndarray:
    """Value noise on a global lattice of ``cell`` pixels, evaluated on a (rows x cols) grid, in [0, 1]."""
    fr, fc = rows / cell, cols / cell
    i0, j0 = np.floor(fr).astype(np.int64), np.floor(fc).astype(np.int64)
    tr, tc = _smooth(fr - i0)[:, None], _smooth(fc - j0)[None, :]
    li, lj = np.arange(i0.min(), i0.max() + 2), np.arange(j0.min(), j0.max() + 2)
    lat = _unit(_hash(seed, salt, li[:, None], lj[None, :])).astype(np.float32)
    j = j0 - lj[0]
    across = lat[:, j] + (lat[:, j + 1] - lat[:, j]) * tc.astype(np.float32)  # separable: columns first
    i = i0 - li[0]
    return across[i] + (across[i + 1] - across[i]) * tr.astype(np.float32)


def _point_noise(seed: int, salt: int, y: np.ndarray, x: np.ndarray, cell: float) -> np.ndarray:
    """The same value noise at scattered points (used by the layout)."""
    fy, fx = np.asarray(y, float) / cell, np.asarray(x, float) / cell
    i, j = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    ty, tx = _smooth(fy - i), _smooth(fx - j)
    a, b = _unit(_hash(seed, salt, i, j)), _unit(_hash(seed, salt, i, j + 1))
    c, d = _unit(_hash(seed, salt, i + 1, j)), _unit(_hash(seed, salt, i + 1, j + 1))
    top, bot = a + (b - a) * tx, c + (d - c) * tx
    return top + (bot - top) * ty
