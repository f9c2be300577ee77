"""Tasks that finish a run on the workers: a block's vector parts, the reduction of the objects and cells cut by
block edges, and the assembly of the final files from the parts (see :mod:`geoseg.parts`).

Every task is idempotent: its output part has a fixed name and is written once (a retry after a worker died
finds it in place, or writes the same bytes); a reduction removes its inputs only after its output is in
place. What goes back to the driver is small: counts, measures, fragment sides and edge strips, cell keys.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from geoseg.export import VectorSink, write_cog
from geoseg.parts import (ARRAYS_SUFFIX, CELLS, FRAGMENTS, VECTORS, build_vrt, cell_part_name, fragment_name,
                          load_cell_part, load_fragment, load_frames, save_cell_part, save_fragment, save_frames)
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
    part = f"b_{bv.index[0]:05d}_{bv.index[1]:05d}{ARRAYS_SUFFIX}"
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
    not depend on which task finished first; ``(temporary file, final path)`` pairs for the driver to rename.

    GDAL creates the layers (schema, spatial index, triggers); the features go in through SQLite in one
    transaction (see :func:`bulk_insert`), part by part, so memory holds one part at a time."""
    for suffix in ("", "-journal", "-wal", "-shm"):  # what a lost attempt of this task left
        Path(f"{folder / 'vectors.gpkg'}{suffix}").unlink(missing_ok=True)
    sink = VectorSink(out, layer_types, crs, styles=styles, stage=folder)
    try:
        chunks = (frame for name in sorted(parts) for frame in load_frames(folder / VECTORS / name).items())
        bulk_insert(sink.tmp, {layer: list(fields) for layer, fields in sink.fields.items()}, chunks)
        return sink.finish()
    except BaseException:
        sink.abort()
        raise


def bulk_insert(gpkg: Path, fields: dict[str, list[str]],
                chunks: Iterable[tuple[str, tuple[np.ndarray, dict[str, np.ndarray]]]]) -> dict[str, int]:
    """Append ``(layer, (WKB, columns))`` chunks to the empty layers GDAL made in ``gpkg``, all in one SQLite
    transaction: a killed run leaves the layers empty, never half filled.

    Hand-written because pyogrio holds no dataset open between calls and its Arrow writer commits every
    batch; here the same rows go in (fids from 1 in order, GeoPackage geometry blobs, R-tree entries, feature
    counts and extents), with the per-row R-tree and count triggers set aside and restored inside the
    transaction, so the spatial index is filled from the envelopes computed once per chunk."""
    db = sqlite3.connect(gpkg, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND (name LIKE "
                              "'rtree_%_insert' OR name LIKE 'trigger_insert_feature_count_%')").fetchall()
        for name, _ in triggers:
            db.execute(f'DROP TRIGGER "{name}"')
        layers = {t: _LayerRows(db, t, fields[t]) for t in fields}
        for layer, (wkb, cols) in chunks:
            layers[layer].add(wkb, cols)
        for rows in layers.values():
            rows.close()
        for _, sql in triggers:
            db.execute(sql)
        db.execute("COMMIT")
        return {t: rows.n for t, rows in layers.items()}
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


class _LayerRows:
    """One layer's inserts: features, R-tree entries, and at the end its feature count and extent."""

    def __init__(self, db: sqlite3.Connection, table: str, fields: list[str]) -> None:
        self.db, self.table, self.n = db, table, 0
        (self.geom,), = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (table,))
        (self.srs,), = db.execute("SELECT srs_id FROM gpkg_contents WHERE table_name = ?", (table,))
        self.rtree = db.execute("SELECT 1 FROM gpkg_extensions WHERE table_name = ? AND extension_name = "
                                "'gpkg_rtree_index'", (table,)).fetchone() is not None
        (self.first,), = db.execute(f'SELECT COALESCE(MAX(fid), 0) FROM "{table}"')
        names = ", ".join(f'"{c}"' for c in ["fid", self.geom, *fields])
        self.insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * (len(fields) + 2))})'
        self.fields = fields
        self.extent = np.array([np.inf, np.inf, -np.inf, -np.inf])

    def add(self, wkb: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        if not len(wkb):
            return
        bounds = shapely.bounds(shapely.from_wkb(wkb))  # minx, miny, maxx, maxy; NaN for an empty geometry
        fids = range(self.first + self.n + 1, self.first + self.n + 1 + len(wkb))
        values = [cols[f].tolist() for f in self.fields]  # plain Python values: what sqlite3 binds
        self.db.executemany(self.insert, zip(fids, gpkg_blobs(wkb, bounds, self.srs), *values))
        full = ~np.isnan(bounds[:, 0])
        b = bounds[full]
        if self.rtree and len(b):
            self.db.executemany(f'INSERT INTO "rtree_{self.table}_{self.geom}" VALUES (?, ?, ?, ?, ?)',
                                zip(np.asarray(fids)[full].tolist(), b[:, 0].tolist(), b[:, 2].tolist(),
                                    b[:, 1].tolist(), b[:, 3].tolist()))
        if len(b):
            self.extent = np.r_[np.minimum(self.extent[:2], b[:, :2].min(0)), np.maximum(self.extent[2:],
                                                                                          b[:, 2:].max(0))]
        self.n += len(wkb)

    def close(self) -> None:
        self.db.execute("UPDATE gpkg_ogr_contents SET feature_count = feature_count + ? WHERE lower(table_name) = "
                        "lower(?)", (self.n, self.table))
        if np.isfinite(self.extent).all():  # stored as GDAL prints it (16 significant digits)
            x0, y0, x1, y1 = (float(f"{v:.16g}") for v in self.extent)
            self.db.execute("UPDATE gpkg_contents SET min_x = min(coalesce(min_x, ?1), ?1), min_y = "
                            "min(coalesce(min_y, ?2), ?2), max_x = max(coalesce(max_x, ?3), ?3), max_y = "
                            "max(coalesce(max_y, ?4), ?4), last_change = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                            "WHERE table_name = ?5", (x0, y0, x1, y1, self.table))


_BLOB_HEADER = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs", "<i4"), ("env", "<f8", 4)])


def gpkg_blobs(wkb: np.ndarray, bounds: np.ndarray, srs: int) -> list[bytes]:
    """GeoPackage geometry blobs (spec 2.1.3): the ``GP`` header, little-endian, with the XY envelope
    (min x, max x, min y, max y), then the WKB; an empty geometry gets the empty flag and no envelope."""
    head = np.zeros(len(wkb), _BLOB_HEADER)
    head["magic"], head["flags"], head["srs"] = b"GP", 0b0011, srs  # little-endian, envelope [minx, maxx, miny, maxy]
    head["env"] = bounds[:, [0, 2, 1, 3]]
    raw = head.tobytes()
    size = _BLOB_HEADER.itemsize
    empty = struct.pack("<2sBBi", b"GP", 0, 0b10001, srs)
    return [raw[i * size:(i + 1) * size] + g if b == b else empty + g
            for i, (g, b) in enumerate(zip(wkb.tolist(), bounds[:, 0].tolist()))]
