"""The reduction: objects cut by block edges and network cells split over blocks, finished as soon as complete.

Blocks arrive in any order. Fragments of neighbouring blocks that touch across their shared edge are joined
(union-find); a group is finished — assembled on one crop and run through exactly the same split/trace code as
an object that lies inside one block — once every block edge it touches has its neighbour done. Network cells
are finished once every block under the cell and its margin has reported. So each object is emitted exactly
once, its geometry and id do not depend on the block size, and only the objects and cells on the frontier of
finished blocks are held (the bounded-memory invariant) — their arrays parked on disk
(:mod:`geoseg.vectorize.spill`), so memory stays flat however wide the scene is.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import Window, union

from geoseg.allocator import HeapTrim
from geoseg.grid import within
from geoseg.vectorize.blocks import (OPPOSITE, STEP, BlockVectors, CellPart, Fragment, cell_box, groups_frame,
                                     network_frames)
from geoseg.vectorize.instances import ObjectCrop
from geoseg.vectorize.options import CELL_MARGIN, ClassVectors, VectorSpec
from geoseg.vectorize.spill import SPILL_MIN_BYTES, Spill

Edge = tuple[tuple[int, int], tuple[int, int]]


def _edge(a: tuple[int, int], b: tuple[int, int]) -> Edge:
    return (a, b) if a < b else (b, a)


class FragmentGroups:
    """Union-find of the fragments of one object class over the block edges they touch: bookkeeping only (ids,
    sides, edge strips), so the same code serves the in-memory reduction and the driver's tracker
    (:mod:`geoseg.tracker`), whose fragments wait on disk."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self.waiting: dict[int, set[Edge]] = {}
        self.waiters: dict[Edge, set[int]] = defaultdict(set)
        self.strips: dict[tuple[tuple[int, int], int], np.ndarray] = {}
        self.next_id = 0

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        self.waiting[ra] |= self.waiting.pop(rb)

    def add(self, block: tuple[int, int], sides: list[tuple[int, ...]], strips: dict[int, np.ndarray],
            done: set[tuple[int, int]]) -> tuple[list[int], list[list[int]]]:
        """Register a block's fragments (``done`` already holds the block); returns their ids and the member ids
        of every group this block completes."""
        gids = np.arange(self.next_id, self.next_id + len(sides))
        self.next_id += len(sides)
        affected = set()
        for g, frag_sides in zip(gids.tolist(), sides):
            self.parent[g], self.members[g] = g, [g]
            self.waiting[g] = set()
            for side in frag_sides:
                nb = (block[0] + STEP[side][0], block[1] + STEP[side][1])
                if nb not in done:
                    self.waiting[g].add(_edge(block, nb))
                    self.waiters[_edge(block, nb)].add(g)
            affected.add(g)
        for side, (dr, dc) in STEP.items():
            nb = (block[0] + dr, block[1] + dc)
            if nb not in done:
                if side in strips:
                    self.strips[(block, side)] = np.where(strips[side] >= 0, gids[np.maximum(strips[side], 0)], -1)
                continue
            facing = self.strips.pop((nb, OPPOSITE[side]), None)
            if facing is not None and side in strips:
                mine = np.where(strips[side] >= 0, gids[np.maximum(strips[side], 0)], -1)
                both = (mine >= 0) & (facing >= 0)
                for a, b in set(zip(mine[both].tolist(), facing[both].tolist())):
                    self.union(a, b)
            for g in self.waiters.pop(_edge(block, nb), ()):  # the neighbour's objects no longer wait for us
                self.waiting[self.find(g)].discard(_edge(block, nb))
                affected.add(g)
        roots = sorted({self.find(g) for g in affected})
        return gids.tolist(), [self._complete(root) for root in roots if not self.waiting[root]]

    def _complete(self, root: int) -> list[int]:
        members = self.members.pop(root)
        for g in members:  # finished for good: no strip or waiter refers to it any more
            del self.parent[g]
        self.waiting.pop(root)
        return members

    def __len__(self) -> int:
        return len(self.parent)


def merge_crops(crops: list[ObjectCrop]) -> ObjectCrop:
    """Assemble a complete group on one crop, to be split/traced like a whole object in one block (fragments
    own disjoint pixels, so the sums are exact in any order)."""
    win = union(*(c.window for c in crops))
    mask = np.zeros((int(win.height), int(win.width)), bool)
    prob = np.zeros(mask.shape, np.float32)
    heads = {k: np.zeros(mask.shape, np.float32) for k in crops[0].heads}
    for c in crops:
        view = within(c.window, win)
        mask[view] |= c.mask
        prob[view] += c.prob
        for k, v in c.heads.items():
            heads[k][view] += v
    return ObjectCrop(win, mask, prob, heads)


def cell_parts_expected(cell: tuple[int, int], size: int, vs: VectorSpec) -> int:
    """How many blocks lie under a network cell and its margin (each sends one part)."""
    (r0, r1), (c0, c1) = cell_box(cell, size, vs, CELL_MARGIN).toranges()
    s = vs.block_side
    return ((r1 - 1) // s - r0 // s + 1) * ((c1 - 1) // s - c0 // s + 1)


def finish_cell(cell: tuple[int, int], parts: list[tuple[Window, np.ndarray, np.ndarray]], opts: ClassVectors,
                vs: VectorSpec) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Polygons and centerlines of a cell from its parts ``(window, mask, prob)`` (non-empty ones)."""
    box = cell_box(cell, vs.cell_px(opts), vs, CELL_MARGIN)
    mask = np.zeros((int(box.height), int(box.width)), bool)
    prob = np.zeros(mask.shape, np.float32)
    for win, m, p in parts:
        view = within(win, box)
        mask[view], prob[view] = m, p
    return network_frames(mask, prob, box, cell, opts, vs)


class _Objects:
    """Fragments of one object class waiting for their neighbours (large crops parked on disk)."""

    def __init__(self, opts: ClassVectors, vs: VectorSpec, spill: Spill) -> None:
        self.opts, self.vs, self.spill = opts, vs, spill
        self.groups = FragmentGroups()
        self.frags: dict[int, ObjectCrop] = {}
        self.parked: dict[int, tuple[Path, Window]] = {}

    def add(self, block: tuple[int, int], frags: list[Fragment], strips: dict[int, np.ndarray],
            done: set[tuple[int, int]]) -> Iterator[gpd.GeoDataFrame]:
        gids, complete = self.groups.add(block, [f.sides for f in frags], strips, done)
        for g, frag in zip(gids, frags):
            self.keep(g, frag.crop)
        finished = [merge_crops([self.crop(g) for g in members]) for members in complete]
        if finished:  # one frame for all groups this block completes
            yield groups_frame(finished, self.opts, self.vs)

    def keep(self, g: int, crop: ObjectCrop) -> None:
        arrays = {"mask": crop.mask, "prob": crop.prob, **{f"head_{k}": v for k, v in crop.heads.items()}}
        path = self.spill.park(arrays)
        if path is not None:
            self.parked[g] = (path, crop.window)
        else:
            self.frags[g] = crop

    def crop(self, g: int) -> ObjectCrop:
        if g in self.frags:
            return self.frags.pop(g)
        path, win = self.parked.pop(g)
        arrays = self.spill.take(path)
        return ObjectCrop(win, arrays.pop("mask"), arrays.pop("prob"),
                          {k.removeprefix("head_"): v for k, v in arrays.items()})

    def __len__(self) -> int:
        return len(self.frags) + len(self.parked)


class _Cells:
    """Shares of network cells waiting for the rest of their blocks (parked on disk meanwhile)."""

    def __init__(self, opts: ClassVectors, vs: VectorSpec, spill: Spill) -> None:
        self.opts, self.vs, self.spill = opts, vs, spill
        self.size = vs.cell_px(opts)
        self.parts: dict[tuple[int, int], list[CellPart]] = defaultdict(list)

    def add(self, parts: list[CellPart]) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
        for part in parts:
            got = self.parts[part.cell]
            got.append(part)
            if len(got) == cell_parts_expected(part.cell, self.size, self.vs):
                yield from self.finish(part.cell)
            else:
                part.park(self.spill)

    def finish(self, cell: tuple[int, int]) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
        parts = [(p.window, *p.unpack(self.spill)) for p in self.parts.pop(cell) if not p.empty]
        if not parts:
            return
        polys, lines = finish_cell(cell, parts, self.opts, self.vs)
        yield self.opts.layer, polys
        yield self.opts.line_layer, lines

    def __len__(self) -> int:
        return len(self.parts)


class Reducer:
    """Feeds block results in, yields ``(layer, frame)`` pairs as soon as they are final."""

    def __init__(self, vs: VectorSpec, spill_folder: str | os.PathLike[str] | None = None,
                 spill_min_bytes: int = SPILL_MIN_BYTES, trim_every_s: float | None = 0.0) -> None:
        self.vs = vs
        # freed heap pages go back to the OS after each block (``trim_every_s=0``), at most every
        # ``trim_every_s`` seconds, or never (None: ``infer`` trims for the whole process, see geoseg.allocator)
        self.trim = HeapTrim(trim_every_s)
        self.spill = Spill(spill_folder, spill_min_bytes)
        self.done: set[tuple[int, int]] = set()
        self.objects = {c.k: _Objects(c, vs, self.spill) for c in vs.classes if not c.network}
        self.cells = {c.k: _Cells(c, vs, self.spill) for c in vs.classes if c.network}
        self.layer = {c.k: c.layer for c in vs.classes}

    def add(self, bv: BlockVectors) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
        with rasterio.Env():  # one GDAL environment for the tracing of every group and cell this block finishes
            for layer, frames in bv.frames.items():
                for frame in frames:
                    yield layer, frame
            self.done.add(bv.index)
            for k, objs in self.objects.items():
                for frame in objs.add(bv.index, bv.fragments.get(k, []), bv.strips.get(k, {}), self.done):
                    yield self.layer[k], frame
            for k, cells in self.cells.items():
                yield from cells.add(bv.parts.get(k, []))
            self.trim.maybe()

    def close(self) -> None:
        """Remove the folder of parked frontier data (also done when the reducer is garbage-collected)."""
        self.spill.close()

    def pending(self) -> int:
        """Fragments and cells still held (0 once every block is in)."""
        return sum(len(o) for o in self.objects.values()) + sum(len(c) for c in self.cells.values())
