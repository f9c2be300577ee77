"""``geoseg bench assemble``: CPU seconds per 100k features of the GeoPackage assembly from vector parts.

Synthetic parts (polygons and centerlines, spatially ordered like blocks) are assembled twice in this process:
by :func:`geoseg.assemble.assemble_vectors` (one SQLite transaction) and through GDAL's appends
(:class:`geoseg.export.VectorSink`, a transaction per 5000 features), with the commits each made.
"""

from __future__ import annotations

import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from geoseg.assemble import assemble_vectors
from geoseg.export import VectorSink
from geoseg.parts import ARRAYS_SUFFIX, VECTORS, load_frames, save_frames

LAYERS = {"buildings": "Polygon", "road_centerlines": "LineString"}
CRS = "EPSG:32631"


def synthetic_parts(folder: Path, n_parts: int, per_part: int) -> list[str]:
    """``n_parts`` parts of ``per_part`` octagons and as many two-vertex lines each, part ``p`` in its own
    100 m column (as blocks are)."""
    rng = np.random.default_rng(0)
    (folder / VECTORS).mkdir(parents=True, exist_ok=True)
    names = []
    for p in range(n_parts):
        x, y = 500_000 + p * 100 + rng.random(per_part) * 90, 5_000_000 + rng.random(per_part) * 90
        polys = shapely.buffer(shapely.points(x, y), 1 + rng.random(per_part), quad_segs=2)
        lines = shapely.linestrings(np.stack([np.stack([x, y], 1), np.stack([x + 3, y + 2], 1)], 1))
        ids = np.arange(p * per_part, (p + 1) * per_part)
        frames: dict[str, list[Any]] = {
            "buildings": [gpd.GeoDataFrame({"id": ids, "class": "building", "area_m2": shapely.area(polys),
                                            "perimeter_m": shapely.length(polys), "score": rng.random(per_part),
                                            "orientation": rng.random(per_part)}, geometry=polys, crs=CRS)],
            "road_centerlines": [gpd.GeoDataFrame({"id": ids, "class": "road", "length_m": shapely.length(lines),
                                                   "width_m": rng.random(per_part), "score": rng.random(per_part)},
                                                  geometry=lines, crs=CRS)]}
        names.append(f"b_{p:05d}_00000{ARRAYS_SUFFIX}")
        save_frames(folder / VECTORS / names[-1], frames)
    return names


def commits(gpkg: Path) -> int:
    """SQLite's file change counter: one more per committed write transaction."""
    with open(gpkg, "rb") as f:
        f.seek(24)
        return int(struct.unpack(">I", f.read(4))[0])


def bench_assemble(features: int = 100_000, per_part: int = 2_000) -> dict[str, Any]:
    n_parts = max(1, features // per_part)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stage"
        parts = synthetic_parts(folder, n_parts, per_part)
        n = n_parts * per_part * len(LAYERS)
        c0 = time.process_time()
        ((ours, _),) = assemble_vectors(folder, Path(tmp) / "out.gpkg", parts, LAYERS, CRS, {})
        one = time.process_time() - c0
        ours_commits = commits(ours)
        c0 = time.process_time()
        sink = VectorSink(Path(tmp) / "gdal.gpkg", LAYERS, CRS)
        for name in sorted(parts):
            for layer, (wkb, cols) in load_frames(folder / VECTORS / name).items():
                sink.add_wkb(layer, wkb, cols)
        ((gdal, _),) = sink.finish()
        appends = time.process_time() - c0
        return {"bench": "assemble", "features": n, "parts": n_parts,
                "one_transaction": {"cpu_s_per_100k_features": round(one / n * 1e5, 3), "commits": ours_commits},
                "gdal_appends": {"cpu_s_per_100k_features": round(appends / n * 1e5, 3), "commits": commits(gdal)},
                "commits": "SQLite's file change counter of the finished file, creating the empty layers included"}
