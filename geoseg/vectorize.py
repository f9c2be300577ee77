"""Class raster to polygons, per block, with objects cut by block edges merged into one.

Polygons are built in *global pixel coordinates* (integers, exact), merged and simplified there, and only
then mapped through the scene's affine: so the geometry does not depend on the block size, and a rotated or
sheared transform is honoured in full (DESIGN invariants 1 and 4).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage, sparse
from scipy.sparse import csgraph


# rasterio 1.4 creates the in-memory dataset for ``shapes`` before giving it its transform, and warns that it
# is "not georeferenced" (also for the identity shift of the block at the scene origin) from whichever Dask
# thread runs it. Scenes without georeferencing are refused with a clear error in geoseg.scene, so these
# warnings never carry information here. Process-wide, because per-call catch_warnings is not thread-safe.
for _message in ("Dataset has no geotransform", "The given matrix is equal to Affine.identity"):
    warnings.filterwarnings("ignore", message=_message, category=NotGeoreferencedWarning)


@dataclass
class Pieces:
    """Polygons of one class in global pixel coordinates, with the statistics needed to merge them."""

    geoms: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    n_px: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    prob_sum: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    open: np.ndarray = field(default_factory=lambda: np.empty(0, bool))

    def __len__(self) -> int:
        return len(self.geoms)

    def select(self, keep: np.ndarray) -> "Pieces":
        return Pieces(self.geoms[keep], self.n_px[keep], self.prob_sum[keep], self.open[keep])

    @staticmethod
    def concat(parts: list["Pieces"]) -> "Pieces":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Pieces()
        return Pieces(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("geoms", "n_px", "prob_sum", "open")))


def polygonize_block(classes: np.ndarray, probs: np.ndarray, valid: np.ndarray, row0: int, col0: int,
                     scene_shape: tuple[int, int], class_ids: tuple[int, ...]) -> dict[int, Pieces]:
    """4-connected objects of each class in a block; objects touching an inner block edge are marked open."""
    h, w = classes.shape
    inner = (row0 > 0, row0 + h < scene_shape[0], col0 > 0, col0 + w < scene_shape[1])
    shift = Affine.translation(col0, row0)
    out: dict[int, Pieces] = {}
    for k in class_ids:
        labels, n = ndimage.label((classes == k) & valid)
        if n == 0:
            out[k] = Pieces()
            continue
        flat = labels.ravel()
        n_px = np.bincount(flat, minlength=n + 1)[1:]
        prob_sum = np.bincount(flat, weights=np.nan_to_num(probs[k]).ravel(), minlength=n + 1)[1:]
        geoms = np.empty(n, object)
        # the mask keeps GDAL from tracing the background, a huge polygon with a hole per object
        for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4,
                                                    transform=shift):
            geoms[int(value) - 1] = shapely.geometry.shape(geom)
        edges = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
        is_open = np.zeros(n + 1, bool)
        for edge, interior in zip(edges, inner):
            if interior:
                is_open[edge] = True
        out[k] = Pieces(geoms, n_px.astype(np.int64), prob_sum, is_open[1:])
    return out


def merge_open(pieces: Pieces) -> Pieces:
    """Union open pieces that share block edges into whole objects, summing their statistics."""
    if not len(pieces):
        return pieces
    # union per group of touching pieces (connected components), not all at once: smaller peak memory
    left, right = shapely.STRtree(pieces.geoms).query(pieces.geoms, predicate="intersects")
    graph = sparse.coo_matrix((np.ones(len(left)), (left, right)), shape=(len(pieces),) * 2)
    n_groups, group = csgraph.connected_components(graph, directed=False)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    merged = shapely.get_parts(np.array([shapely.union_all(pieces.geoms[order[a:b]])
                                         for a, b in zip(bounds[:-1], bounds[1:])], dtype=object))
    tree = shapely.STRtree(merged)
    anchor = shapely.point_on_surface(pieces.geoms)
    src, dst = tree.query(anchor, predicate="within")
    owner = np.full(len(pieces), -1)
    owner[src] = dst
    n_px = np.bincount(owner, weights=pieces.n_px, minlength=len(merged)).astype(np.int64)
    prob_sum = np.bincount(owner, weights=pieces.prob_sum, minlength=len(merged))
    return Pieces(merged, n_px, prob_sum, np.zeros(len(merged), bool))


def to_frame(pieces: Pieces, class_name: str, transform: Affine, crs: CRS, *, min_area_px: float,
             simplify_px: float) -> gpd.GeoDataFrame:
    """Filter, simplify (in pixels), map through the scene affine and attach class, area_m2 and score."""
    keep = pieces.n_px >= min_area_px
    pieces = pieces.select(keep)
    geoms = shapely.normalize(shapely.simplify(pieces.geoms, 0.0))  # drop collinear seam vertices first
    if simplify_px > 0:
        geoms = shapely.normalize(shapely.simplify(geoms, simplify_px, preserve_topology=True))
    geoms = shapely.transform(geoms, lambda xy: apply_affine(transform, xy))
    frame = gpd.GeoDataFrame({"class": [class_name] * len(geoms),
                              "score": np.round(pieces.prob_sum / np.maximum(pieces.n_px, 1), 4)},
                             geometry=gpd.GeoSeries(geoms, crs=crs))
    frame.insert(1, "area_m2", area_m2(frame))
    return frame


def area_m2(frame: gpd.GeoDataFrame) -> np.ndarray:
    """Polygon areas in square metres; a geographic CRS is projected to its local UTM zone first."""
    if not len(frame):
        return np.empty(0)
    crs = frame.crs
    if crs.is_geographic:
        return np.round(frame.to_crs(frame.estimate_utm_crs()).area.to_numpy(), 2)
    return np.round(frame.area.to_numpy() * crs.axis_info[0].unit_conversion_factor ** 2, 2)


def apply_affine(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` column/row coordinates through the full affine (rotation and shear included)."""
    a, b, c, d, e, f = transform[:6]
    return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])
