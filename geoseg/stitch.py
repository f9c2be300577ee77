"""Place tile predictions into a block: each tile contributes only its core, so no blending is needed.

Cropping the halo (instead of weighting overlaps) makes every output pixel come from exactly one tile whose
input is fixed by the global grid, which gives the partition-invariance and halo-exactness invariants by
construction. The crop happens where the model ran (:meth:`geoseg.predict.Predictor.feed`): only
cores come back from the device.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from geoseg.tiling import Block, TileSpec, tile_offsets
from geoseg.predict import CoreBatch, TileBatch

# batches of raw tiles in, their cores out, in order (``Predictor.feed`` with its settings bound)
Feed = Callable[[Iterable[TileBatch]], Iterator[CoreBatch]]


def tile_cores_valid(valid: np.ndarray, block: Block, spec: TileSpec) -> np.ndarray:
    """Which tiles own at least one valid pixel (all-nodata tiles are skipped without running the model)."""
    h, c = spec.halo, spec.core
    return np.array([valid[r + h:r + h + c, q + h:q + h + c].any() for r, q in tile_offsets(block, spec)], bool)


def predict_block(feed: Feed, data: np.ndarray, valid: np.ndarray, ran: np.ndarray, block: Block, spec: TileSpec,
                  batch_size: int, class_fill: int, n_outputs: int = 0,
                  prob_fill: float = -1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Run a block's tiles through ``feed`` batch by batch and place each core into the block's owned window.

    ``data`` ``(bands, h, w)`` and ``valid`` ``(h, w)`` are the block input (with its halo), raw; only the tiles
    marked in ``ran`` go to the model. Returns the uint8 classes (``class_fill`` where no tile ran) and, when
    ``n_outputs`` is given, the float32 probabilities and heads (``prob_fill`` there). Memory is the block-sized
    results plus one batch in flight, whatever the block size.
    """
    c, t = spec.core, spec.tile
    n_r = block.tile_rows[1] - block.tile_rows[0]
    n_c = block.tile_cols[1] - block.tile_cols[0]
    classes = np.full((n_r * c, n_c * c), class_fill, np.uint8)
    probs = np.full((n_outputs, n_r * c, n_c * c), prob_fill, np.float32) if n_outputs else None
    todo = [o for o, run in zip(tile_offsets(block, spec), ran) if run]
    groups = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    all_valid = bool(valid.all())  # then no masks travel to the device

    def batches() -> Iterator[TileBatch]:
        for group in groups:
            masks = None if all_valid else [valid[r:r + t, q:q + t] for r, q in group]
            yield [data[:, r:r + t, q:q + t] for r, q in group], masks

    for group, cores in zip(groups, feed(batches())):
        if probs is not None and cores.probs is None:
            raise ValueError("predict_block: n_outputs given but the feed returns no probabilities (want_probs)")
        for k, (r, q) in enumerate(group):
            classes[r:r + c, q:q + c] = cores.classes[k]
            if probs is not None and cores.probs is not None:
                probs[:, r:r + c, q:q + c] = cores.probs[k]
    height, width = int(block.window.height), int(block.window.width)
    return classes[:height, :width], None if probs is None else probs[:, :height, :width]


def class_raster(probs: np.ndarray) -> np.ndarray:
    """``argmax`` over the class axis as uint8 (ties go to the lower class, as ``np.argmax``), without its
    int64 intermediate: a running maximum needs one float and one byte plane instead of eight bytes a pixel."""
    best = probs[0].copy()
    classes = np.zeros(best.shape, np.uint8)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        classes[better] = k
        np.maximum(best, probs[k], out=best)
    return classes
