"""The worker side: vectorise one block inside its Dask task.

Objects (buildings) entirely inside the block are split, traced and turned into ready-to-write frames here.
Objects touching an inner block edge leave as :class:`Fragment` crops (with the block's edge strips, so the
reduction can tell which fragments of neighbouring blocks touch). Network classes (roads) work per cell of a
global grid: cells (with their margin) inside the block are finished here, the others leave as
:class:`CellPart` crops for :mod:`geoseg.vectorize.reduce`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.errors import WindowError
from rasterio.windows import Window
from scipy import ndimage

from geoseg.grid import within
from geoseg.vectorize.centerlines import centerlines
from geoseg.vectorize.instances import ObjectCrop, crop_object, pad1, split_many, unsplittable
from geoseg.vectorize.options import CELL_MARGIN, ClassVectors, VectorSpec
from geoseg.vectorize.polygons import anchors, label_polygons, line_frame, polygon_frame
from geoseg.vectorize.spill import Spill

MAX_LINE_SIMPLIFY_PX = 1.0  # centerlines are simplified by the class's simplify_m, but by at most this many pixels

TOP, BOTTOM, LEFT, RIGHT = range(4)
OPPOSITE = {TOP: BOTTOM, BOTTOM: TOP, LEFT: RIGHT, RIGHT: LEFT}
STEP = {TOP: (-1, 0), BOTTOM: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}


@dataclass
class Fragment:
    """Part of an object cut by inner block edges; ``sides`` are the edges it touches."""

    crop: ObjectCrop
    sides: tuple[int, ...]


@dataclass
class CellPart:
    """A block's share (``window`` of the scene) of a network cell with margin, packed small because it waits
    on the frontier of done blocks: mask as bits, probabilities (float16) only at mask pixels; nothing at all if
    it has no pixel. While it waits, the reduction may :meth:`park` the arrays on disk."""

    cell: tuple[int, int]
    window: Window
    bits: np.ndarray | None = None
    values: np.ndarray | None = None
    stored: Path | None = None

    @classmethod
    def pack(cls, cell: tuple[int, int], window: Window, mask: np.ndarray, prob: np.ndarray) -> "CellPart":
        if not mask.any():
            return cls(cell, window)
        return cls(cell, window, np.packbits(mask), prob[mask].astype(np.float16))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.window.height), int(self.window.width)

    @property
    def empty(self) -> bool:
        return self.bits is None and self.stored is None

    def park(self, spill: Spill) -> None:
        if self.bits is not None and self.values is not None:
            self.stored = spill.park({"bits": self.bits, "values": self.values})
            if self.stored is not None:
                self.bits = self.values = None

    def unpack(self, spill: Spill | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.stored is not None:
            assert spill is not None, "a parked part is unpacked with the spill that holds it"
            arrays = spill.take(self.stored)
            self.bits, self.values, self.stored = arrays["bits"], arrays["values"], None
        assert self.bits is not None, "an empty part has nothing to unpack"
        mask = np.unpackbits(self.bits, count=self.shape[0] * self.shape[1]).reshape(self.shape).astype(bool)
        prob = np.zeros(self.shape, np.float32)
        prob[mask] = self.values
        return mask, prob


@dataclass
class BlockVectors:
    """What one block hands to the reduction: finished frames per layer, fragments and cell parts per class."""

    index: tuple[int, int]
    frames: dict[str, list[gpd.GeoDataFrame]] = field(default_factory=dict)
    fragments: dict[int, list[Fragment]] = field(default_factory=dict)
    strips: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    parts: dict[int, list[CellPart]] = field(default_factory=dict)

    def add_frame(self, layer: str, frame: gpd.GeoDataFrame) -> None:
        if len(frame):
            self.frames.setdefault(layer, []).append(frame)


def instance_labels(crops: list[ObjectCrop], opts: ClassVectors, vs: VectorSpec) -> list[np.ndarray]:
    """Instance labels of whole objects on their crops (1..n), split if the class asks for it."""
    out: list[np.ndarray | None] = [c.mask.astype(np.int32) if not opts.split or c.whole else None for c in crops]
    todo = [i for i, labels in enumerate(out) if labels is None]
    split = split_many([pad1(crops[i].mask) for i in todo], [{k: pad1(v) for k, v in crops[i].heads.items()}
                                                           for i in todo], opts.post.split_depth_m / vs.m_per_px)
    for i, labels in zip(todo, split):
        out[i] = labels[1:-1, 1:-1]
    return cast("list[np.ndarray]", out)


def label_rows(labels: np.ndarray, prob: np.ndarray, win: Window, vs: VectorSpec
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, pixel polygons, pixel counts, probability sums)`` of every positive label of a raster on window
    ``win`` of the scene: the rows :func:`polygon_frame` turns into features."""
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, object), np.empty(0, np.int64), np.empty(0)
    polys = label_polygons(labels, win)
    at = np.flatnonzero(labels)  # object pixels only: most of a block is background
    vals = labels.ravel()[at]
    n_px = np.bincount(vals, minlength=n + 1)[1:]
    prob_sum = np.bincount(vals, weights=prob.ravel()[at].astype(np.float64), minlength=n + 1)[1:]
    ids = anchors(at, vals, n, win, vs.scene_shape[1])
    present = np.array(sorted(polys))
    geoms = np.array([polys[v] for v in present], dtype=object)
    return ids[present - 1], geoms, n_px[present - 1], prob_sum[present - 1]


def labels_frame(labels: np.ndarray, prob: np.ndarray, win: Window, opts: ClassVectors,
                 vs: VectorSpec) -> gpd.GeoDataFrame:
    """Polygons of every positive label of a raster on window ``win`` of the scene, with their attributes."""
    return polygon_frame(*label_rows(labels, prob, win, vs), opts.name, opts, vs)


def objects_frame(crops: list[ObjectCrop], win: Window, opts: ClassVectors, vs: VectorSpec) -> gpd.GeoDataFrame:
    """Split whole objects and trace them all at once on one instance raster on window ``win`` of the scene."""
    shape = (int(win.height), int(win.width))
    inst = np.zeros(shape, np.int32)
    prob = np.zeros(shape, np.float32)
    next_id = 0
    for crop, labels in zip(crops, instance_labels(crops, opts, vs)):
        view = within(crop.window, win)
        inst[view] = np.where(labels > 0, labels + next_id, inst[view])
        prob[view] = np.where(crop.mask, crop.prob, prob[view])
        next_id += int(labels.max())
    return labels_frame(inst, prob, win, opts, vs)


def groups_frame(crops: list[ObjectCrop], opts: ClassVectors, vs: VectorSpec) -> gpd.GeoDataFrame:
    """Whole objects far apart (groups the reduction assembled), each split and traced on its own crop, in one
    frame: the per-frame cost is paid once per batch, not once per object."""
    labels = instance_labels(crops, opts, vs)
    rows = [label_rows(inst, c.prob, c.window, vs) for c, inst in zip(crops, labels)]
    ids, geoms, n_px, prob_sum = (np.concatenate([r[i] for r in rows]) for i in range(4))
    return polygon_frame(ids, geoms, n_px, prob_sum, opts.name, opts, vs)


def cell_box(cell: tuple[int, int], size: int, vs: VectorSpec, margin: int = 0) -> Window:
    """The scene window of a network cell (with ``margin``), clipped to the scene."""
    i, j = cell
    return Window(j * size - margin, i * size - margin, size + 2 * margin, size + 2 * margin).intersection(
        vs.grid.full)


def network_frames(mask: np.ndarray, prob: np.ndarray, win: Window, cell: tuple[int, int],
                   opts: ClassVectors, vs: VectorSpec) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Polygons (cut at the cell edges) and centerlines of one network cell, from its crop with margin (on
    window ``win`` of the scene)."""
    size = vs.cell_px(opts)
    box = cell_box(cell, size, vs)
    core = within(box, win)
    labels, _ = ndimage.label(mask[core])
    polys = labels_frame(labels, prob[core], box, opts, vs)
    m = vs.m_per_px
    smooth_px = min(opts.post.simplify_m / m, MAX_LINE_SIMPLIFY_PX)
    lines, widths, scores, ids = centerlines(mask, prob, win, box, opts.post.spur_m / m, smooth_px,
                                             vs.skeleton_step(opts))
    return polys, line_frame(ids, lines, widths, scores, opts.name, vs)


def vectorize_block(classes: np.ndarray, probs: np.ndarray, heads: dict[str, np.ndarray], own: np.ndarray,
                    index: tuple[int, int], win: Window, vs: VectorSpec) -> BlockVectors:
    """Vectorise every class of one block (its owned pixels only: ``win`` of the scene)."""
    with rasterio.Env():  # one GDAL environment for all tracing calls (rasterio sets one up per call otherwise)
        out = BlockVectors(index)
        h, w = classes.shape
        H, W = vs.scene_shape
        row0, col0 = int(win.row_off), int(win.col_off)
        inner = {TOP: row0 > 0, BOTTOM: row0 + h < H, LEFT: col0 > 0, RIGHT: col0 + w < W}
        heads0 = {name: v[0] for name, v in heads.items()}
        for opts in vs.classes:
            mask = (classes == opts.k) & own
            if opts.network:
                prob = np.where(mask, np.nan_to_num(probs[opts.k]), 0).astype(np.float32)
                _network_block(out, mask, prob, win, opts, vs)
                continue
            labels, n = ndimage.label(mask)
            edges = {TOP: labels[0], BOTTOM: labels[-1], LEFT: labels[:, 0], RIGHT: labels[:, -1]}
            touched = np.zeros((4, n + 1), bool)
            for side, strip in edges.items():
                if inner[side]:
                    touched[side, strip] = True
            touched[:, 0] = False
            is_open = np.asarray(touched.any(axis=0))
            closed: list[ObjectCrop] = []
            frags: list[Fragment] = []
            local = np.full(n + 1, -1, np.int64)
            whole = unsplittable(mask, labels, n, heads0) if opts.split else np.zeros(n + 1, bool)
            for value, sl in enumerate(ndimage.find_objects(labels), start=1):
                crop = crop_object(labels, value, sl, probs[opts.k], heads0, win)
                if is_open[value]:
                    local[value] = len(frags)
                    frags.append(Fragment(crop, tuple(int(s) for s in np.flatnonzero(touched[:, value]))))
                else:
                    crop.whole = bool(whole[value])
                    closed.append(crop)
            out.add_frame(opts.layer, objects_frame(closed, win, opts, vs))
            if frags:
                out.fragments[opts.k] = frags
                out.strips[opts.k] = {side: local[strip] for side, strip in edges.items()
                                      if inner[side] and (local[strip] >= 0).any()}
        return out


def _network_block(out: BlockVectors, mask: np.ndarray, prob: np.ndarray, win: Window, opts: ClassVectors,
                   vs: VectorSpec) -> None:
    """Finish the cells whose margin lies in this block (``win`` of the scene); hand the others' shares to the
    reduction."""
    size = vs.cell_px(opts)
    h, w = mask.shape
    row0, col0 = int(win.row_off), int(win.col_off)
    prob = prob.astype(np.float16).astype(np.float32)  # as the packed parts carry it: same scores either way
    i0, i1 = max(row0 - CELL_MARGIN, 0) // size, (row0 + h - 1 + CELL_MARGIN) // size
    j0, j1 = max(col0 - CELL_MARGIN, 0) // size, (col0 + w - 1 + CELL_MARGIN) // size
    n_i, n_j = -(-vs.scene_shape[0] // size), -(-vs.scene_shape[1] // size)
    for i in range(i0, min(i1, n_i - 1) + 1):
        for j in range(j0, min(j1, n_j - 1) + 1):
            box = cell_box((i, j), size, vs, CELL_MARGIN)
            try:
                here = box.intersection(win)
            except WindowError:  # the cell's margin does not reach into this block
                continue
            sl = within(here, win)
            if here == box:  # the whole cell and its margin are here
                if mask[sl].any():
                    for layer, frame in zip((opts.layer, opts.line_layer),
                                            network_frames(mask[sl], prob[sl], here, (i, j), opts, vs)):
                        out.add_frame(layer, frame)
                continue
            out.parts.setdefault(opts.k, []).append(CellPart.pack((i, j), here, mask[sl], prob[sl]))
