"""Vectorise a class raster that comes block by block from any source, without a model: the same block
vectoriser and reduction ``infer`` uses. Tests feed it rasterised truth; ``geoseg bench vectorize`` feeds it
procedural masks generated per block, so a 32k² scene is never whole in memory.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.grid import Grid
from geoseg.pipeline import ClassPost
from geoseg.vectorize.blocks import vectorize_block
from geoseg.vectorize.options import ClassVectors, VectorSpec
from geoseg.vectorize.reduce import Reducer

# a block's window of the scene -> (classes uint8 (h, w), probs float32 (k, h, w), heads {name: (1, h, w)})
BlockSource = Callable[[Window], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]
NODATA = 255


def make_spec(shape: tuple[int, int], block_side: int, transform: Affine, crs: str,
              classes: Iterable[tuple[int, str, str, ClassPost]]) -> VectorSpec:
    """A :class:`VectorSpec` for a projected-CRS scene of ``shape`` (rows, cols)."""
    crs_obj = CRS.from_user_input(crs)
    unit = 1.0 if crs_obj.is_geographic else float(crs_obj.linear_units_factor[1])
    m_per_px = unit * math.sqrt(abs(transform.determinant))
    return VectorSpec(tuple(ClassVectors(k, name, layer, post) for k, name, layer, post in classes),
                      Grid(transform, shape[1], shape[0], crs_obj), block_side, m_per_px, unit)


def block_windows(vs: VectorSpec, order: Iterable[int] | None = None) -> list[tuple[tuple[int, int], Window]]:
    """``(index, window)`` of every block (clipped to the scene), row-major or in a given permutation."""
    s = vs.block_side
    n_r, n_c = vs.block_grid
    blocks = [((i, j), Window(j * s, i * s, s, s).intersection(vs.grid.full)) for i in range(n_r) for j in range(n_c)]
    return [blocks[i] for i in order] if order is not None else blocks


def vectorize_source(source: BlockSource, vs: VectorSpec, order: Iterable[int] | None = None
                     ) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
    """Every final ``(layer, frame)`` of a scene whose blocks come from ``source``, as soon as it is final."""
    reducer = Reducer(vs)
    try:
        for index, win in block_windows(vs, order):
            classes, probs, heads = source(win)
            vectors = vectorize_block(classes, probs, heads, classes != NODATA, index, win, vs)
            del classes, probs, heads  # not held while the reduction finishes cells
            yield from reducer.add(vectors)
            del vectors
        if reducer.pending():
            raise RuntimeError(f"vector reduction left {reducer.pending()} fragment(s) unfinished")
    finally:
        reducer.close()


def collect(source: BlockSource, vs: VectorSpec, order: Iterable[int] | None = None) -> dict[str, gpd.GeoDataFrame]:
    """All layers in memory (small scenes and tests only)."""
    parts: dict[str, list[gpd.GeoDataFrame]] = {layer: [] for layer in vs.layers()}
    for layer, frame in vectorize_source(source, vs, order):
        parts[layer].append(frame)
    return {layer: gpd.GeoDataFrame(gpd.pd.concat(f, ignore_index=True), crs=f[0].crs) if f else
            gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=vs.crs)) for layer, f in parts.items()}


def procedural_source(seed: int = 0, house: int = 24) -> BlockSource:
    """Masks drawn from global pixel coordinates only: terraced rows of ``house``-px houses on a lattice, and a
    road grid with diagonal avenues; any block of any scene size, without holding the scene."""

    def source(win: Window) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        (r0, r1), (c0, c1) = win.toranges()
        h, w = r1 - r0, c1 - c0
        rr = np.arange(r0, r1)[:, None]
        cc = np.arange(c0, c1)[None, :]
        period = 8 * house
        ry, cx = rr % period, cc % period
        classes = np.zeros((h, w), np.uint8)
        # a row of houses: touching units every `house` px, with a 2-px darker wall the boundary head sees
        row_band = (ry >= house) & (ry < 2 * house)
        cell_id = (rr // period) * 7919 + (cc // period) * 104729 + seed
        keep = (cell_id % 5) != 0  # some lattice cells empty
        classes[row_band & (cx >= house // 2) & (cx < period - house) & keep] = 1
        detached = (ry >= 3 * house + 4) & (ry < 4 * house + 2) & ((cx % (2 * house)) < house + (cell_id % 7))
        classes[detached & keep] = 1
        road = (ry >= period - 12) | (cx >= period - 10) | (np.abs((rr - cc) % (4 * period)) < 9)
        classes[road & (classes == 0)] = 2
        probs = np.zeros((3, h, w), np.float32)
        for k in range(3):
            probs[k] = np.where(classes == k, 0.9, 0.05)
        wall = row_band & ((cx % house) < 2) & (classes == 1)
        boundary = np.where(wall, 0.9, 0.1).astype(np.float32)
        return classes, probs, {"boundary": boundary[None]}

    return source


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process: the speed figure that holds on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_vectorize(size: int, block: int = 1024, out: Path | None = None) -> dict[str, Any]:
    """Block vectoriser + reduction + GeoPackage writer over a procedural ``size``² class raster."""
    from geoseg.export import VectorSink

    vs = make_spec((size, size), block, Affine(0.5, 0, 500000, 0, -0.5, 5000000), "EPSG:32631",
                   [(1, "building", "buildings", ClassPost(min_area_m2=8.0)),
                    (2, "road", "roads", ClassPost(min_area_m2=20.0, simplify_m=0.5))])
    counts = {layer: 0 for layer in vs.layers()}
    with tempfile.TemporaryDirectory() as tmp:
        path = out or Path(tmp) / "bench.gpkg"
        sink = VectorSink(path, vs.layers(), vs.crs)
        start, cpu = time.perf_counter(), cpu_seconds()
        for layer, frame in vectorize_source(procedural_source(), vs):
            counts[layer] += len(frame)
            sink.add(layer, frame)
        sink.commit()
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    n_poly = counts["buildings"] + counts["roads"]
    return {"bench": "vectorize", "size": size, "block": block, "seconds": round(seconds, 2),
            "polygons": n_poly, "polygons_per_s": round(n_poly / seconds, 1), "cpu_s": round(cpu, 2),
            "cpu_s_per_mpx": round(cpu / (size * size / 1e6), 3), "objects": counts,
            "peak_rss_mb": round(peak_rss_mb(), 1)}
