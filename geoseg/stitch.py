"""Place tile predictions into a block: each tile contributes only its core, so no blending is needed.

Cropping the halo (instead of weighting overlaps) makes every output pixel come from exactly one tile whose
input is fixed by the global grid, which gives DESIGN invariants 1 and 2 (partition invariance, halo
exactness) by construction.
"""

from __future__ import annotations

import numpy as np

from geoseg.grid import Block, TileSpec, tile_offsets


def cut_tiles(block_input: np.ndarray, block: Block, spec: TileSpec) -> np.ndarray:
    """Tile inputs ``(n, bands, t, t)`` cut from a block's input array (views copied into one batch)."""
    t = spec.tile
    return np.stack([block_input[:, r:r + t, c:c + t] for r, c in tile_offsets(block, spec)])


def tile_cores_valid(valid: np.ndarray, block: Block, spec: TileSpec) -> np.ndarray:
    """Which tiles own at least one valid pixel (all-nodata tiles are skipped without running the model)."""
    h, c = spec.halo, spec.core
    return np.array([valid[r + h:r + h + c, q + h:q + h + c].any() for r, q in tile_offsets(block, spec)], bool)


def stitch_block(tile_probs: np.ndarray, ran: np.ndarray, block: Block, spec: TileSpec,
                 fill: float) -> np.ndarray:
    """Assemble the cores of ``tile_probs`` (only for tiles where ``ran``) into the block's owned window."""
    h, c = spec.halo, spec.core
    n_r = block.tile_rows[1] - block.tile_rows[0]
    n_c = block.tile_cols[1] - block.tile_cols[0]
    out = np.full((tile_probs.shape[1], n_r * c, n_c * c), fill, np.float32)
    k = 0
    for n, (r, q) in enumerate(tile_offsets(block, spec)):
        if ran[n]:
            out[:, r:r + c, q:q + c] = tile_probs[k, :, h:h + c, h:h + c]
            k += 1
    return out[:, :int(block.window.height), :int(block.window.width)]
