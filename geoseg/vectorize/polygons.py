"""Label rasters to polygons in *global pixel coordinates*, then to map geometries with GIS attributes.

Polygons are traced and simplified in global pixel coordinates (integers, exact) and only then mapped through
the scene's full affine: the geometry does not depend on the block that traced it, and a rotated or sheared
transform is honoured (DESIGN invariants 1 and 4).
"""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.vectorize.options import ClassVectors, VectorSpec
from geoseg.vectorize.regularize import regularize

# rasterio 1.4 creates the in-memory dataset for ``shapes`` before giving it its transform, and warns that it
# is "not georeferenced" (also for the identity shift of the block at the scene origin) from whichever Dask
# thread runs it. Scenes without georeferencing are refused with a clear error in geoseg.scene, so these
# warnings never carry information here. Process-wide, because per-call catch_warnings is not thread-safe.
for _message in ("Dataset has no geotransform", "The given matrix is equal to Affine.identity"):
    warnings.filterwarnings("ignore", message=_message, category=NotGeoreferencedWarning)


def apply_affine(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` column/row coordinates through the full affine (rotation and shear included)."""
    a, b, c, d, e, f = transform[:6]
    return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])


def label_polygons(labels: np.ndarray, row0: int, col0: int) -> dict[int, shapely.Polygon]:
    """One polygon per positive label (4-connected regions), in global pixel coordinates.

    A label whose pixels are only 8-connected would trace as several rings; its largest part is kept.
    """
    out: dict[int, shapely.Polygon] = {}
    if not labels.any():
        return out
    # the mask keeps GDAL from tracing the background, a huge polygon with a hole per object
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4,
                                                transform=Affine.translation(col0, row0)):
        poly = shapely.geometry.shape(geom)
        key = int(value)
        if key not in out or poly.area > out[key].area:
            out[key] = poly
    return out


def anchors(labels: np.ndarray, n: int, row0: int, col0: int, scene_width: int) -> np.ndarray:
    """Stable id of each label 1..n: the global raster index of its first pixel in row-major order.

    It depends only on where the object is, never on the block that found it (identical for any block size).
    """
    flat = labels.ravel()
    order = np.flatnonzero(flat)
    first = np.full(n + 1, -1, np.int64)
    vals = flat[order]
    # the first occurrence of each value in row-major order
    uniq, idx = np.unique(vals, return_index=True)
    first[uniq] = order[idx]
    r, c = np.divmod(first[1:], labels.shape[1])
    return (row0 + r) * scene_width + (col0 + c)


def metric(geoms: np.ndarray, vs: VectorSpec) -> np.ndarray:
    """Geometries in a metric frame: a geographic CRS goes to its local UTM zone, else units become metres."""
    series = gpd.GeoSeries(geoms, crs=vs.crs)
    if series.crs is not None and series.crs.is_geographic:
        return np.asarray(series.to_crs(series.estimate_utm_crs()).values)
    return shapely.transform(geoms, lambda xy: xy * vs.unit_m)


def orientation_deg(metric_geoms: np.ndarray) -> np.ndarray:
    """Direction of the long side of each minimum rotated rectangle, degrees east-counterclockwise in [0, 180)."""
    out = np.zeros(len(metric_geoms))
    for i, env in enumerate(shapely.oriented_envelope(metric_geoms)):
        xy = shapely.get_coordinates(env)
        if len(xy) < 3:
            continue
        e1, e2 = xy[1] - xy[0], xy[2] - xy[1]
        v = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
        out[i] = np.degrees(np.arctan2(v[1], v[0])) % 180.0
    return np.round(out, 2)


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
    if post.regularize:
        geoms = np.array([regularize(g, post.regularize_m / m) for g in geoms], dtype=object)
    elif post.simplify_m > 0:
        geoms = shapely.simplify(geoms, post.simplify_m / m, preserve_topology=True)
    geoms = shapely.normalize(geoms)
    geoms = shapely.transform(geoms, lambda xy: apply_affine(vs.transform, xy))
    met = metric(geoms, vs) if len(geoms) else geoms
    return gpd.GeoDataFrame({
        "id": ids.astype(np.int64), "class": [name] * len(geoms),
        "area_m2": np.round(shapely.area(met), 2), "perimeter_m": np.round(shapely.length(met), 2),
        "score": np.round(prob_sum / np.maximum(n_px, 1), 4), "orientation": orientation_deg(met),
    }, geometry=gpd.GeoSeries(geoms, crs=vs.crs))


def line_frame(ids: np.ndarray, lines_px: np.ndarray, width_px: np.ndarray, score: np.ndarray, name: str,
               vs: VectorSpec) -> gpd.GeoDataFrame:
    """Centerlines mapped through the affine with ``id``, ``class``, ``length_m``, ``width_m`` and ``score``."""
    lines = shapely.transform(lines_px, lambda xy: apply_affine(vs.transform, xy))
    met = metric(lines, vs) if len(lines) else lines
    return gpd.GeoDataFrame({"id": ids.astype(np.int64), "class": [name] * len(lines),
                             "length_m": np.round(shapely.length(met), 2),
                             "width_m": np.round(width_px * vs.m_per_px, 2), "score": np.round(score, 4)},
                            geometry=gpd.GeoSeries(lines, crs=vs.crs))
