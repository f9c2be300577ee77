"""Labels of one scene, rasterised on the fly for any window: vectors (any OGR source, any CRS) or a raster.

Vectors are reprojected to the scene's CRS once and kept in a spatial index per class, so a window only
touches the geometries near it; each window is rasterised on the window's own :class:`~geoseg.grid.Grid`. Training
(:mod:`geoseg.train`) and evaluation (:mod:`geoseg.evaluate`) both read labels through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyogrio.errors
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.errors import ConfigError
from geoseg.grid import Grid

IGNORE = 255  # label value of pixels that carry no label (scene nodata, label raster nodata)


@dataclass
class LabelSource:
    """Class labels of a scene. ``classes`` are the class names, index 0 background (never painted).

    Where labels overlap, the class listed first wins (it is painted last).
    """

    path: str
    classes: tuple[str, ...]
    crs: object
    frames: dict[int, gpd.GeoDataFrame] = field(default_factory=dict)  # class id -> geometries (scene CRS)
    raster: str = ""  # a label raster instead of vectors (any grid and CRS: warped when not aligned)

    @property
    def is_vector(self) -> bool:
        return not self.raster

    def window(self, grid: Grid) -> np.ndarray:
        """Class ids (uint8; IGNORE where a label raster has nodata) on a pixel grid (in the labels' CRS)."""
        if self.raster:
            return self._raster_window(grid)
        out = np.zeros(grid.shape, np.uint8)
        area = grid.footprint()
        for k in sorted(self.frames, reverse=True):
            geoms = self.geometries(k, area)
            if len(geoms):
                rasterize(((g, k) for g in geoms), out_shape=grid.shape, transform=grid.transform, out=out,
                          all_touched=False)
        return out

    def instances(self, grid: Grid, classes: tuple[int, ...]) -> np.ndarray:
        """Object ids (int32, 0 = none) of the given classes' polygons: boundary and distance targets need
        to tell touching objects apart."""
        out = np.zeros(grid.shape, np.int32)
        area, n = grid.footprint(), 0
        for k in classes:
            geoms = self.geometries(k, area)
            if len(geoms):
                rasterize(((g, n + i + 1) for i, g in enumerate(geoms)), out_shape=grid.shape,
                          transform=grid.transform, out=out, all_touched=False)
                n += len(geoms)
        return out

    def geometries(self, class_id: int, area: shapely.Geometry | None = None) -> np.ndarray:
        """The class's geometries (scene CRS), only those intersecting ``area`` when given (STRtree query)."""
        frame = self.frames.get(class_id)
        if frame is None or not len(frame):
            return np.empty(0, object)
        if area is None:
            return frame.geometry.values
        return frame.geometry.values[np.sort(frame.sindex.query(area, predicate="intersects"))]

    def _raster_window(self, grid: Grid) -> np.ndarray:
        transform, shape = grid.transform, grid.shape
        with rasterio.open(self.raster) as src:
            col, row = ~src.transform @ (transform.c, transform.f)
            aligned = (src.crs == self.crs and transform.a == src.transform.a and transform.e == src.transform.e
                       and transform.b == src.transform.b == 0 and abs(col - round(col)) < 1e-6
                       and abs(row - round(row)) < 1e-6)
            if aligned:  # a window of the label raster itself
                win = Window(round(col), round(row), shape[1], shape[0])
                data = src.read(1, window=win, boundless=True, fill_value=IGNORE, masked=True)
            else:  # another grid or CRS: warped onto the requested grid (nearest: class ids stay class ids)
                with WarpedVRT(src, crs=self.crs, transform=transform, width=shape[1], height=shape[0],
                               resampling=Resampling.nearest, src_nodata=src.nodata, nodata=IGNORE) as vrt:
                    data = vrt.read(1, masked=True)
        out = np.asarray(np.ma.filled(data, IGNORE)).astype(np.int64)
        out[(out < 0) | (out >= len(self.classes))] = IGNORE
        return out.astype(np.uint8)


def _read_vectors(path: str, layer: str | None, where: str) -> gpd.GeoDataFrame:
    try:
        return pyogrio.read_dataframe(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        layers = ""
        try:
            layers = f" (layers: {', '.join(pyogrio.list_layers(path)[:, 0])})"
        except Exception:  # noqa: BLE001 - the file itself is unreadable: the first message says so
            pass
        raise ConfigError(f"{path}: cannot read labels{' layer ' + layer if layer else ''} for {where} "
                          f"({str(err).splitlines()[0]}){layers}; check the path and the class layers") from None


def load_labels(scene: str, grid: Grid, classes: tuple[dict, ...], labels: str = "", label_raster: str = "",
                layer: str = "", class_field: str = "", required: bool = True, missing_ok: bool = False
                ) -> LabelSource:
    """Load the labels of a scene on ``grid``, reprojected to its CRS, and check they overlap it (one-line errors
    otherwise).

    A class's layer is ``layer`` of its class entry, else its name + "s" (the layer ``geoseg infer`` writes).
    With ``required=False`` (predictions) missing layers are empty and nothing has to overlap; with
    ``missing_ok`` (a truth that labels only some classes) missing layers are empty but the rest must overlap.
    """
    names = tuple(c["name"] for c in classes)
    scene_crs = grid.crs
    if label_raster:
        if not Path(label_raster).exists():
            raise ConfigError(f"{label_raster}: label raster not found (labels of {scene}); check the path")
        return LabelSource(label_raster, names, scene_crs, raster=label_raster)
    if not labels:
        raise ConfigError(f"{scene}: no labels; give 'labels' (vectors) or 'label_raster' for this scene")
    if not Path(labels).exists():
        raise ConfigError(f"{labels}: label file not found (labels of {scene}); check the path")
    frames: dict[int, gpd.GeoDataFrame] = {}
    if class_field:
        frame = _read_vectors(labels, layer or None, scene)
        if class_field not in frame.columns:
            raise ConfigError(f"{labels}: has no attribute {class_field!r} (columns: {', '.join(frame.columns)}); "
                              "set train.data.class_field to the column naming each feature's class")
        parts = {k: frame[frame[class_field].astype(str) == n] for k, n in enumerate(names) if k}
    else:
        strict = required and not missing_ok
        present = set(pyogrio.list_layers(labels)[:, 0]) if not strict else set()
        parts = {k: _read_vectors(labels, c.get("layer") or f"{c['name']}s", scene)
                 for k, c in enumerate(classes) if k and (strict or (c.get("layer") or f"{c['name']}s") in present)}
    for k, frame in parts.items():
        if frame.crs is None:
            raise ConfigError(f"{labels}: labels have no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:XXXX)")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        frame = frame.to_crs(scene_crs) if frame.crs != scene_crs else frame
        frames[k] = gpd.GeoDataFrame(geometry=shapely.make_valid(frame.geometry.values), crs=scene_crs)
    src = LabelSource(labels, names, scene_crs, frames)
    if not required:
        return src
    area = grid.footprint()
    if not any(len(src.geometries(k, area)) for k in frames):
        total = sum(len(f) for f in frames.values())
        raise ConfigError(f"{labels}: none of its {total} label geometries overlap scene {scene} (after "
                          f"reprojection to {scene_crs}); check the labels' CRS and that they belong to this scene")
    return src
