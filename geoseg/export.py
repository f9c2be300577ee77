"""Outputs written safely: COG rasters streamed by block, GeoPackage layers appended in batches.

Every file goes to a temporary name in its target folder and is renamed into place when complete
(DESIGN invariant 5); ``abort`` removes the temporary files.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geoseg.errors import OutputError
from geoseg.scene import SceneInfo

COG_BLOCK = 512


def check_output(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Fail before any compute if ``path`` exists (without overwrite) or its folder is not writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist; create it first")
    probe = folder / f".geoseg-probe-{uuid.uuid4().hex}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{path}: cannot write in folder {folder} ({err.strerror}); choose another --out") from None
    return path


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same filesystem, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


class RasterSink:
    """A scene-shaped raster written block by block, turned into a COG with overviews on commit."""

    def __init__(self, path: str | os.PathLike[str], scene: SceneInfo, count: int, dtype: str, nodata: float,
                 resampling: str, descriptions: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.stage = temp_name(self.path).with_suffix(".stage.tif")
        self.final_tmp = temp_name(self.path)
        self.resampling = resampling
        self.dataset = rasterio.open(
            self.stage, "w", driver="GTiff", width=scene.width, height=scene.height, count=count, dtype=dtype,
            crs=scene.crs, transform=scene.transform, nodata=nodata, tiled=True, blockxsize=COG_BLOCK,
            blockysize=COG_BLOCK, compress="ZSTD", ZSTD_LEVEL=1, BIGTIFF="IF_SAFER")  # staging: fast codec
        for i, desc in enumerate(descriptions, start=1):
            self.dataset.set_band_description(i, desc)

    def write(self, window: Window, data: np.ndarray) -> None:
        self.dataset.write(data if data.ndim == 3 else data[None], window=window)

    def commit(self) -> Path:
        """Copy the staged GeoTIFF to a COG (GDAL streams it, building overviews) and rename into place."""
        self.dataset.close()
        try:
            rasterio.shutil.copy(self.stage, self.final_tmp, driver="COG", COMPRESS="DEFLATE",
                                 BLOCKSIZE=COG_BLOCK, OVERVIEWS="AUTO", RESAMPLING=self.resampling,
                                 BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
            os.replace(self.final_tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        if not self.dataset.closed:
            self.dataset.close()
        for p in (self.stage, self.final_tmp, Path(f"{self.stage}.aux.xml")):
            p.unlink(missing_ok=True)


class VectorSink:
    """GeoPackage layers appended in batches, so no list of all polygons is held until the end."""

    def __init__(self, path: str | os.PathLike[str], layers: tuple[str, ...], crs: object,
                 flush_at: int = 20_000) -> None:
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self.crs = crs
        self.flush_at = flush_at
        self.pending: dict[str, list[gpd.GeoDataFrame]] = {name: [] for name in layers}
        self.written: dict[str, int] = {name: 0 for name in layers}

    def add(self, layer: str, frame: gpd.GeoDataFrame) -> None:
        if len(frame):
            self.pending[layer].append(frame)
        if sum(len(f) for f in self.pending[layer]) >= self.flush_at:
            self._flush(layer)

    def _flush(self, layer: str) -> None:
        frames = self.pending[layer]
        if not frames and self.written[layer]:
            return
        frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True) if frames else _empty(self.crs), crs=self.crs)
        exists = self.tmp.exists()
        # GeoPackage 1.2: our bundled GDAL would write 1.4, which QGIS 3.22 (GDAL 3.6) flags as "partially supported"
        options = {} if exists else {"dataset_options": {"VERSION": "1.2"}}
        frame.to_file(self.tmp, layer=layer, driver="GPKG", engine="pyogrio", append=exists,
                      geometry_type="Polygon", promote_to_multi=False, layer_options={"SPATIAL_INDEX": "YES"},
                      **options)
        self.written[layer] += len(frame)
        self.pending[layer] = []

    def commit(self) -> Path:
        try:
            for layer in self.pending:
                self._flush(layer)
            os.replace(self.tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.tmp}{suffix}").unlink(missing_ok=True)


def _empty(crs: object) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"class": [], "area_m2": [], "score": []}, geometry=gpd.GeoSeries([], crs=crs))
