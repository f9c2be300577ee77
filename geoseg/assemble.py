"""Tasks that finish a run on the workers: a block's vector parts, the reduction of the objects and cells cut by
block edges, and the assembly of the final files from the parts (see :mod:`geoseg.parts`).

Every task is idempotent: its output part has a fixed name and is written once (a retry after a worker died
finds it in place, or writes the same bytes); a reduction removes its inputs only after its output is in
place. What goes back to the driver is small: counts, measures, fragment sides and edge strips, cell keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.export import VectorSink, write_cog
from geoseg.parts import (CELLS, FRAGMENTS, VECTORS, build_vrt, cell_part_name, fragment_name, load_cell_part,
                          load_fragment, load_frames, save_cell_part, save_fragment, save_frames)
from geoseg.grid import Grid
from geoseg.styles import ClassPalette, LayerStyle
from geoseg.summary import layer_measure
from geoseg.vectorize.blocks import BlockVectors, groups_frame
from geoseg.vectorize.options import VectorSpec
from geoseg.vectorize.reduce import finish_cell, merge_crops

Cell = tuple[int, int]


@dataclass
class Totals:
    """Features and their measure (metres of lines, square metres of polygons) per layer."""

    counts: dict[str, int] = field(default_factory=dict)
    measures: dict[str, float] = field(default_factory=dict)

    def add_frames(self, frames: dict[str, list[Any]], layer_types: dict[str, str]) -> None:
        for layer, parts in frames.items():
            for frame in parts:
                self.counts[layer] = self.counts.get(layer, 0) + len(frame)
                self.measures[layer] = self.measures.get(layer, 0.0) + layer_measure(frame, layer_types[layer])

    def merge(self, other: "Totals") -> None:
        for layer, n in other.counts.items():
            self.counts[layer] = self.counts.get(layer, 0) + n
        for layer, m in other.measures.items():
            self.measures[layer] = self.measures.get(layer, 0.0) + m


@dataclass
class VectorParts:
    """What a block task tells the driver about its vectors: its finished features' totals, per object class
    the sides each fragment touches and the block's edge strips (local fragment index, -1 for none), per
    network class the cells it sent a share of (and whether that share has pixels)."""

    part: str
    totals: Totals
    fragments: dict[int, tuple[list[tuple[int, ...]], dict[int, np.ndarray]]]
    cells: dict[int, list[tuple[Cell, bool]]]


def store_block_vectors(bv: BlockVectors, folder: Path, layer_types: dict[str, str]) -> VectorParts:
    """Write a block's finished features, fragments and cell shares into the vector staging ``folder``."""
    part = f"b_{bv.index[0]:05d}_{bv.index[1]:05d}.npz"
    save_frames(folder / VECTORS / part, dict(bv.frames))
    totals = Totals()
    totals.add_frames(dict(bv.frames), layer_types)
    fragments = {}
    for k, frags in bv.fragments.items():
        for n, frag in enumerate(frags):
            save_fragment(folder / FRAGMENTS / fragment_name(k, bv.index, n), frag.crop)
        strips = {side: strip.astype(np.int32) for side, strip in bv.strips.get(k, {}).items()}
        fragments[k] = ([f.sides for f in frags], strips)
    cells: dict[int, list[tuple[Cell, bool]]] = {}
    for k, shares in bv.parts.items():
        for share in shares:
            if not share.empty and share.bits is not None and share.values is not None:
                save_cell_part(folder / CELLS / cell_part_name(k, share.cell, bv.index), share.window, share.bits,
                               share.values)
            cells.setdefault(k, []).append((share.cell, not share.empty))
    return VectorParts(part, totals, fragments, cells)


@dataclass(frozen=True)
class ReduceJob:
    """Finish complete groups of fragments (``groups``: fragment part names per group) or complete network
    cells (``cells``: each cell with its shares' part names) of class ``k`` into the vector part ``out``."""

    k: int
    out: str
    groups: tuple[tuple[str, ...], ...] = ()
    cells: tuple[tuple[Cell, tuple[str, ...]], ...] = ()


def run_reduce(job: ReduceJob, vs: VectorSpec, folder: Path) -> Totals:
    """A reduction task: the vector part of the finished groups or cells, then its inputs removed."""
    opts = next(c for c in vs.classes if c.k == job.k)
    out = folder / VECTORS / job.out
    layer_types = vs.layers()
    frames: dict[str, list[Any]] = {}
    if out.exists():  # a retry: done before the worker was lost
        return part_totals(out, layer_types)
    with rasterio.Env():
        if job.groups:
            crops = [merge_crops([load_fragment(folder / FRAGMENTS / n) for n in g]) for g in job.groups]
            frames[opts.layer] = [groups_frame(crops, opts, vs)]
        for cell, names in job.cells:
            parts = [load_cell_part(folder / CELLS / n) for n in names]
            if parts:
                polys, lines = finish_cell(cell, parts, opts, vs)
                frames.setdefault(opts.layer, []).append(polys)
                frames.setdefault(opts.line_layer, []).append(lines)
    save_frames(out, frames)
    for name in [n for g in job.groups for n in g]:
        (folder / FRAGMENTS / name).unlink(missing_ok=True)
    for name in [n for _, names in job.cells for n in names]:
        (folder / CELLS / name).unlink(missing_ok=True)
    totals = Totals()
    totals.add_frames(frames, layer_types)
    return totals


def part_totals(path: Path, layer_types: dict[str, str]) -> Totals:
    totals = Totals()
    for layer, (wkb, cols) in load_frames(path).items():
        column = "length_m" if layer_types[layer] == "LineString" else "area_m2"
        totals.counts[layer] = len(wkb)
        totals.measures[layer] = float(cols[column].sum()) if column in cols else 0.0
    return totals


@dataclass(frozen=True)
class RasterAssembly:
    """A COG from the block parts in ``folder``: their windows and the raster's grid, type and style."""

    folder: Path
    windows: tuple[Window, ...]
    grid: Grid
    dtype: str
    count: int
    nodata: float
    resampling: str
    descriptions: tuple[str, ...] = ()
    palette: ClassPalette | None = None
    native: Grid | None = None
    regrid: str = "nearest"


def assemble_raster(job: RasterAssembly) -> Path:
    """The COG, complete, at a temporary name in the staging folder (the driver renames it into place)."""
    vrt = build_vrt(job.folder, job.windows, job.grid, job.dtype, job.count, job.nodata,
                    job.descriptions, job.palette)
    return write_cog(vrt, job.folder / "final.tif", job.resampling, job.native, job.regrid)


def assemble_vectors(folder: Path, out: Path, parts: list[str], layer_types: dict[str, str], crs: Any,
                     styles: dict[str, LayerStyle]) -> list[tuple[Path, Path]]:
    """The GeoPackage (and any single-layer conversions) from the vector parts, in name order so the file does
    not depend on which task finished first; ``(temporary file, final path)`` pairs for the driver to rename."""
    for suffix in ("", "-journal", "-wal", "-shm"):  # what a lost attempt of this task left
        Path(f"{folder / 'vectors.gpkg'}{suffix}").unlink(missing_ok=True)
    sink = VectorSink(out, layer_types, crs, styles=styles, stage=folder)
    for name in sorted(parts):
        for layer, (wkb, cols) in load_frames(folder / VECTORS / name).items():
            sink.add_wkb(layer, wkb, cols)
    return sink.finish()
