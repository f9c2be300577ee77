"""Label rasters to polygons in *global pixel coordinates*, then to map geometries with GIS attributes.

Polygons are traced and simplified in global pixel coordinates (integers, exact) and only then mapped through
the scene's full affine: the geometry does not depend on the block that traced it, and a rotated or sheared
transform is honoured (the partition-invariance and carried-georeferencing invariants).
"""

from __future__ import annotations

import functools

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.startup import quiet_shapes_warnings
from geoseg.vectorize.options import ClassVectors, VectorSpec
from geoseg.vectorize.regularize import regularize_all



def label_polygons(labels: np.ndarray, win: Window) -> dict[int, shapely.Polygon]:
    """One polygon per positive label (4-connected regions), in global pixel coordinates.

    A label whose pixels are only 8-connected would trace as several rings; its largest part is kept.
    """
    if not labels.any():
        return {}
    quiet_shapes_warnings()  # rasterio's spurious "not georeferenced" warnings, process-wide, once (geoseg.startup)
    values: list[int] = []
    rings: list[np.ndarray] = []
    owner: list[int] = []
    # the mask keeps GDAL from tracing the background, a huge polygon with a hole per object
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4,
                                                transform=Affine.translation(win.col_off, win.row_off)):
        for ring in geom["coordinates"]:
            rings.append(np.asarray(ring, dtype=np.float64))
            owner.append(len(values))
        values.append(int(value))
    # built in two vectorised calls (first ring of each polygon is its shell): shapely.geometry.shape converts
    # coordinate by coordinate in Python, which cost more than the tracing
    ring_geoms = shapely.linearrings(np.concatenate(rings), indices=np.repeat(np.arange(len(rings)),
                                                                              [len(r) for r in rings]))
    polys = shapely.polygons(ring_geoms, indices=np.array(owner))
    area = shapely.area(polys)
    out: dict[int, shapely.Polygon] = {}
    best: dict[int, float] = {}
    for key, poly, a in zip(values, polys, area.tolist()):
        if key not in out or a > best[key]:
            out[key], best[key] = poly, a
    return out


def anchors(at: np.ndarray, vals: np.ndarray, n: int, win: Window, scene_width: int) -> np.ndarray:
    """Stable id of each label 1..n: the global raster index of its first pixel in row-major order.

    ``at`` are the flat indices of the positive pixels (ascending) of a label raster on window ``win`` of the
    scene, ``vals`` their labels. The id depends only on where the object is, never on the block that found it
    (identical for any block size).
    """
    first = np.full(n + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, vals, at)  # the first occurrence of each value in row-major order
    r, c = np.divmod(first[1:], int(win.width))
    return (int(win.row_off) + r) * scene_width + (int(win.col_off) + c)


@functools.lru_cache(maxsize=8)
def crs_of(wkt: str) -> pyproj.CRS:
    """The run's CRS, parsed once (geopandas would parse the WKT again for every frame)."""
    return pyproj.CRS.from_user_input(wkt)


def metric(geoms: np.ndarray, vs: VectorSpec) -> np.ndarray:
    """Geometries in a metric frame: a geographic CRS goes to its local UTM zone, else units become metres."""
    crs = crs_of(vs.crs)
    if crs.is_geographic:
        series = gpd.GeoSeries(geoms, crs=crs)
        return np.asarray(series.to_crs(series.estimate_utm_crs()).values)
    return geoms if vs.unit_m == 1.0 else shapely.transform(geoms, lambda xy: xy * vs.unit_m)


def orientation_deg(metric_geoms: np.ndarray) -> np.ndarray:
    """Direction of the long side of each minimum rotated rectangle, degrees east-counterclockwise in [0, 180)."""
    out = np.zeros(len(metric_geoms))
    env = shapely.oriented_envelope(metric_geoms)
    box = shapely.get_num_coordinates(env) == 5  # degenerate envelopes (points, lines) keep 0
    if box.any():
        xy = shapely.get_coordinates(env[box]).reshape(-1, 5, 2)
        e1, e2 = xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 1]
        v = np.where((np.hypot(e1[:, 0], e1[:, 1]) >= np.hypot(e2[:, 0], e2[:, 1]))[:, None], e1, e2)
        out[box] = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 180.0
    return np.round(out, 2)


def simplify_polygons(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker, and GEOS's topology-preserving simplifier (much slower on big road polygons) only where
    plain DP would make a polygon invalid or empty or lose a hole."""
    out = shapely.simplify(geoms, tolerance, preserve_topology=False)
    redo = ~shapely.is_valid(out) | shapely.is_empty(out) | \
        (shapely.get_num_interior_rings(out) != shapely.get_num_interior_rings(geoms))
    if redo.any():
        out[redo] = shapely.simplify(geoms[redo], tolerance, preserve_topology=True)
    return out


def polygon_frame(ids: np.ndarray, geoms_px: np.ndarray, n_px: np.ndarray, prob_sum: np.ndarray, name: str,
                  opts: ClassVectors, vs: VectorSpec) -> gpd.GeoDataFrame:
    """Filter (minimum area), drop holes, regularise or simplify (in pixels), map through the affine and attach
    ``id``, ``class``, ``area_m2``, ``perimeter_m``, ``score`` and ``orientation``."""
    post, m = opts.post, vs.m_per_px
    keep = n_px * m * m >= post.min_area_m2
    ids, geoms, n_px, prob_sum = ids[keep], geoms_px[keep], n_px[keep], prob_sum[keep]
    if not post.holes and len(geoms):
        geoms = shapely.polygons(shapely.get_exterior_ring(geoms))
    geoms = shapely.simplify(geoms, 0.0)  # drop collinear staircase vertices first
    plain = simplify_polygons(geoms, post.simplify_m / m) if post.simplify_m > 0 else geoms
    # squared only where that fits the pixels as well as the plain outline does, else the plain one
    geoms = regularize_all(geoms, post.regularize_m / m, plain) if post.regularize else plain
    geoms = shapely.normalize(geoms)
    geoms = shapely.transform(geoms, vs.grid.apply)
    met = metric(geoms, vs) if len(geoms) else geoms
    return _frame({
        "id": ids.astype(np.int64), "class": [name] * len(geoms),
        "area_m2": np.round(shapely.area(met), 2), "perimeter_m": np.round(shapely.length(met), 2),
        "score": np.round(prob_sum / np.maximum(n_px, 1), 4), "orientation": orientation_deg(met),
    }, geoms, vs)


def _frame(columns: dict[str, object], geoms: np.ndarray, vs: VectorSpec) -> gpd.GeoDataFrame:
    """A GeoDataFrame by the cheapest route geopandas offers (half the cost of ``geometry=GeoSeries(...)``:
    one frame is made per block, group and cell, so this overhead adds up)."""
    columns["geometry"] = gpd.array.from_shapely(geoms, crs=crs_of(vs.crs))
    return gpd.GeoDataFrame(pd.DataFrame(columns), geometry="geometry")


def line_frame(ids: np.ndarray, lines_px: np.ndarray, width_px: np.ndarray, score: np.ndarray, name: str,
               vs: VectorSpec) -> gpd.GeoDataFrame:
    """Centerlines mapped through the affine with ``id``, ``class``, ``length_m``, ``width_m`` and ``score``."""
    lines = shapely.transform(lines_px, vs.grid.apply)
    met = metric(lines, vs) if len(lines) else lines
    return _frame({"id": ids.astype(np.int64), "class": [name] * len(lines),
                   "length_m": np.round(shapely.length(met), 2),
                   "width_m": np.round(width_px * vs.m_per_px, 2), "score": np.round(score, 4)}, lines, vs)
