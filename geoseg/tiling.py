"""Pure tiling geometry: the global tile grid, blocks, halos and reflect indexing. No torch, no I/O.

Every tile owns a *core* of ``tile - 2*halo`` pixels on a grid anchored at the scene origin, and reads
``halo`` pixels of context on each side. A block owns a whole number of cores, so the tiles a block computes
do not depend on the block size: that is what makes outputs partition-invariant (the partition-invariance
invariant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class TileSpec:
    """Tile geometry: input size, context on each side and the model's downsampling stride."""

    tile: int = 512
    halo: int = 64
    stride: int = 32

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.halo, self.stride)

    @property
    def core(self) -> int:
        """Side of the region a tile owns."""
        return self.tile - 2 * self.halo


def valid_tiling(tile: int, halo: int, stride: int) -> tuple[int, int]:
    """The nearest tiling that works: tile a positive multiple of the stride (512 when not positive), halo a
    multiple of the stride that leaves a core (``2*halo < tile``)."""
    tile = math.ceil(tile / stride) * stride if tile > 0 else max(stride, 512 // stride * stride)
    halo = min(math.ceil(max(halo, 0) / stride) * stride, (tile // 2 - 1) // stride * stride)
    return tile, halo


def check_tiling(tile: int, halo: int, stride: int, tile_from: str = "--tile", halo_from: str = "--halo") -> None:
    """Raise a one-line ConfigError whose hint is a tiling that then works (``*_from``: where each value came
    from, e.g. a pipeline file's key, so the message names it)."""
    from geoseg.errors import ConfigError

    good_tile, good_halo = valid_tiling(tile, halo, stride)
    if (good_tile, good_halo) == (tile, halo):
        return
    hint = f"try --tile {good_tile} --halo {good_halo}"
    if tile <= 0:
        problem = f"{tile_from} {tile}: the tile size must be positive"
    elif halo < 0:
        problem = f"{halo_from} {halo}: the halo cannot be negative"
    elif tile % stride or halo % stride:
        problem = f"{tile_from} {tile} and {halo_from} {halo}: both must be multiples of the model stride {stride}"
    else:
        problem = f"{halo_from} {halo} leaves no core in a {tile}px tile ({tile_from}): the halo must be < tile/2"
    raise ConfigError(f"{problem}; {hint}")


@dataclass(frozen=True)
class Block:
    """A unit of Dask work: the region it owns (``window``) and the tile cores inside it."""

    index: tuple[int, int]
    window: Window          # owned pixels, clipped to the scene
    tile_rows: tuple[int, int]  # [first, last) global tile row indexes
    tile_cols: tuple[int, int]

    @property
    def n_tiles(self) -> int:
        return (self.tile_rows[1] - self.tile_rows[0]) * (self.tile_cols[1] - self.tile_cols[0])


def block_side(block_size: int, spec: TileSpec) -> int:
    """Round a requested block size up to a whole number of tile cores."""
    return max(1, math.ceil(block_size / spec.core)) * spec.core


BLOCKS_PER_WORKER = 8  # auto block size: at least this many blocks per worker, so that every worker stays busy


def auto_block_size(height: int, width: int, spec: TileSpec, workers: int, batch_size: int = 1,
                    target: int = 1024) -> int:
    """Blocks of whole tile cores: about ``target`` px on a side, but at least one full batch of tiles (a GPU
    batch of 16 needs 4x4 tiles per block), and small enough that every worker still gets several blocks.

    The side does not grow with the scene, so neither does a block's working memory (the bounded-memory
    invariant: peak RSS then stays flat from 4096² to 16384², see the README's Benchmarks). Outputs do not depend
    on the choice (the partition-invariance invariant).
    """
    per_side = max(1, math.ceil(math.sqrt(batch_size)), target // spec.core)
    side = per_side * spec.core
    while side > spec.core and math.ceil(height / side) * math.ceil(width / side) < BLOCKS_PER_WORKER * workers:
        side -= spec.core
    return side


def make_blocks(height: int, width: int, spec: TileSpec, block_size: int) -> list[Block]:
    """Blocks covering the scene in row-major order; each owns whole tile cores of the global grid."""
    side = block_side(block_size, spec)
    per = side // spec.core
    n_tr, n_tc = math.ceil(height / spec.core), math.ceil(width / spec.core)
    blocks = []
    for bi, r0 in enumerate(range(0, height, side)):
        for bj, c0 in enumerate(range(0, width, side)):
            win = Window(c0, r0, min(side, width - c0), min(side, height - r0))
            tr = (bi * per, min((bi + 1) * per, n_tr))
            tc = (bj * per, min((bj + 1) * per, n_tc))
            blocks.append(Block((bi, bj), win, tr, tc))
    return blocks


def block_input_span(block: Block, spec: TileSpec) -> Window:
    """The scene window of every tile input of the block, halo included.

    It may extend past the scene; :func:`reflect_index` maps those pixels back inside.
    """
    c, h = spec.core, spec.halo
    row0, col0 = block.tile_rows[0] * c - h, block.tile_cols[0] * c - h
    return Window(col0, row0, block.tile_cols[1] * c + h - col0, block.tile_rows[1] * c + h - row0)


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map global indexes (possibly outside ``[0, n)``) into the scene by mirror reflection.

    Written by hand because ``np.pad(mode="reflect")`` pads arrays, while blocks need the mapping itself to
    read only the pixels they use; this equals ``np.pad``'s reflect for any pad width.
    """
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


def tile_offsets(block: Block, spec: TileSpec) -> list[tuple[int, int]]:
    """Top-left offsets of each tile input inside the block's input array, row-major."""
    c = spec.core
    return [((i - block.tile_rows[0]) * c, (j - block.tile_cols[0]) * c)
            for i in range(*block.tile_rows) for j in range(*block.tile_cols)]
