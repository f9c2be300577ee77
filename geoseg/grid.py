"""The georeferenced pixel grid: one immutable value (CRS, affine, shape) that every module speaks.

A scene, a block, a tile, an object's crop, an evaluation window and a resampled read are all a :class:`Grid`;
a crop of an array carries the Grid of its pixels (:meth:`Grid.window`), so no module recomputes a transform by
hand (the carried-georeferencing invariant). Modelled on odc-geo's ``GeoBox`` (crop by window, buffer, change
of resolution, footprint, pixel↔map), but our own small class: odc-geo would pull in xarray and dask-array
machinery geoseg does not use, and its resolution change snaps to a pixel size, while geoseg keeps a scene's
exact bounds and origin (rows and columns rounded, see :meth:`Grid.at_resolution`). Affines are applied with
``affine`` on whole arrays; windows are rasterio :class:`~rasterio.windows.Window` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, cast

import numpy as np
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

# ``--resample``: the relative GSD difference below which a scene is read on its own grid
RESAMPLE_EPSILON = 1e-3


@dataclass(frozen=True)
class Grid:
    """``height x width`` pixels placed by ``transform`` in ``crs``. Frozen, hashable and small: it pickles to
    Dask workers inside the task values that carry it."""

    transform: Affine
    width: int
    height: int
    crs: CRS | None = None

    @classmethod
    def of(cls, src: Any) -> "Grid":
        """The grid of an open rasterio dataset (a file, a VRT)."""
        return cls(src.transform, src.width, src.height, src.crs)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``, as numpy arrays on this grid have."""
        return (self.height, self.width)

    @property
    def full(self) -> Window:
        """The window of the whole grid."""
        return Window(0, 0, self.width, self.height)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (works for rotated transforms)."""
        return abs(self.transform.determinant)

    @property
    def gsd_m(self) -> float:
        """Pixel size in ground metres (the side of a square pixel of the same area)."""
        assert self.crs is not None, "a grid without a CRS has no ground size"
        return metres_per_unit(self.crs, self.transform, self.shape) * float(np.sqrt(self.pixel_area))

    def window(self, win: Window) -> "Grid":
        """The grid of the pixels of ``win`` (it may pass the edges: a halo, a reflect-padded read)."""
        return Grid(rasterio.windows.transform(win, self.transform), int(win.width), int(win.height), self.crs)

    def buffered(self, px: int) -> "Grid":
        """This grid grown by ``px`` pixels on every side (shrunk for a negative ``px``)."""
        return self.window(Window(-px, -px, self.width + 2 * px, self.height + 2 * px))

    def resized(self, height: int, width: int) -> "Grid":
        """The same area (origin, rotation, bounds) cut into ``height x width`` pixels."""
        return Grid(self.transform @ Affine.scale(self.width / width, self.height / height), width, height, self.crs)

    def at_resolution(self, gsd_m: float, epsilon: float = RESAMPLE_EPSILON) -> "Grid":
        """This area at ``gsd_m`` ground metres per pixel: same CRS, origin and bounds, rows and columns rounded
        (so the pixel size is ``gsd_m`` up to that rounding). A geographic grid's degrees per pixel scale by the
        same ratio. ``self`` when already within ``epsilon`` (relative) of ``gsd_m``."""
        ratio = self.gsd_m / gsd_m
        width, height = max(1, round(self.width * ratio)), max(1, round(self.height * ratio))
        if abs(ratio - 1) <= epsilon or (width, height) == (self.width, self.height):
            return self
        return self.resized(height, width)  # scaling the pixel axes keeps the origin, rotation and exact bounds

    def to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixel coordinates (fractional; ``(0, 0)`` is the top-left corner)."""
        return _apply(self.transform, cols, rows)

    def to_pixel(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional ``(cols, rows)`` pixel coordinates of map points (the inverse of :meth:`to_map`)."""
        return _apply(~self.transform, xs, ys)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """``(n, 2)`` column/row coordinates to ``(n, 2)`` map coordinates through the full affine (rotation and
        shear included); a :func:`shapely.transform` callback for geometries traced in pixel coordinates."""
        return map_points(self.transform, xy)

    def xy(self, rows: np.ndarray, cols: np.ndarray, offset: str = "center") -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixels, at their centre or ``"ul"`` corner (as :func:`rasterio.transform.xy`)."""
        shift = {"center": 0.5, "ul": 0.0}[offset]
        return self.to_map(np.asarray(cols) + shift, np.asarray(rows) + shift)

    def rowcol(self, xs: np.ndarray, ys: np.ndarray, op: Callable[[np.ndarray], np.ndarray] = np.floor
               ) -> tuple[np.ndarray, np.ndarray]:
        """Integer ``(rows, cols)`` of the pixels holding map points (as :func:`rasterio.transform.rowcol`)."""
        cols, rows = self.to_pixel(xs, ys)
        return op(rows).astype(np.int64), op(cols).astype(np.int64)

    def footprint(self) -> shapely.Polygon:
        """The map-space polygon the grid covers (its four corners; rotated grids too)."""
        xs, ys = self.to_map(np.array([0, self.width, self.width, 0]), np.array([0, 0, self.height, self.height]))
        return shapely.Polygon(np.column_stack([xs, ys]))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the footprint's envelope."""
        return tuple(float(v) for v in shapely.bounds(self.footprint()))  # type: ignore[return-value]

    def window_of(self, bounds: tuple[float, float, float, float]) -> Window:
        """The window (fractional) covering map ``(left, bottom, right, top)`` on a north-up grid."""
        return rasterio.windows.from_bounds(*bounds, transform=self.transform)


def map_points(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """``(n, 2)`` points through ``transform`` (affine's own arithmetic, on whole arrays)."""
    return np.column_stack(_apply(transform, xy[:, 0], xy[:, 1]))


def within(inner: Window, outer: Window) -> tuple[slice, slice]:
    """The array slices of window ``inner`` inside an array that covers window ``outer`` of the same grid."""
    r, c = int(inner.row_off - outer.row_off), int(inner.col_off - outer.col_off)
    return slice(r, r + int(inner.height)), slice(c, c + int(inner.width))


def _apply(transform: Affine, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # affine applies itself to arrays elementwise (``x * a + y * b + c``); its stubs name only scalars
    out = transform @ (np.asarray(xs, np.float64), np.asarray(ys, np.float64))  # type: ignore[operator]
    return cast("tuple[np.ndarray, np.ndarray]", out)


def metres_per_unit(crs: CRS, transform: Affine, shape: tuple[int, int] | None = None) -> float:
    """Ground metres per CRS unit: for a geographic CRS the side of a square with the area of one degree², at
    the grid's centre (its top-left without ``shape``), on the CRS's own ellipsoid (pyproj's geodesics)."""
    if not crs.is_geographic:
        return float(crs.linear_units_factor[1])
    import pyproj

    rows, cols = shape or (0, 0)
    lon, lat = transform @ (cols / 2, rows / 2)
    geod = pyproj.CRS.from_user_input(crs.to_wkt()).get_geod() or pyproj.Geod(ellps="WGS84")
    h = 1e-3  # degrees: central differences over ~100 m, where the scale is linear to 1e-9
    lat = float(np.clip(lat, -90 + 2 * h, 90 - 2 * h))
    east = geod.inv(lon - h, lat, lon + h, lat)[2] / (2 * h)  # metres per degree of longitude here
    north = geod.inv(lon, lat - h, lon, lat + h)[2] / (2 * h)  # metres per degree of latitude here
    return float(np.sqrt(east * north))
