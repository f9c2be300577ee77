"""Output file writers: a COG copied by GDAL from a raster (the VRT mosaic of a run's block parts), vector layers
appended in batches.

Every file goes to a temporary name in its target folder (or in a run's staging folder, :mod:`geoseg.parts`) and
is renamed into place when complete (the nothing-half-written invariant); ``abort`` removes the temporary files.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable

import geopandas as gpd
import numpy as np
import pyogrio
import pyogrio.raw
import rasterio
import rasterio.shutil
import shapely
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geoseg.errors import OutputError
from geoseg.paths import VECTOR_FORMATS, check_output  # noqa: F401 - check_output: callers import it from here
from geoseg.tempfiles import temp_name  # owned names: geoseg.tempfiles removes those of killed runs
from geoseg.grid import Grid
from geoseg.styles import LAYER_STYLES_SQL, LayerStyle

COG_BLOCK = 512
COG_OPEN_PARTS = 16  # VRT sources GDAL keeps open while a COG is copied
# features per Arrow batch when a layer is streamed out of the staging GeoPackage: what is held at once
# (the bounded-memory invariant), large enough to amortise the per-batch overhead
ARROW_BATCH = 20_000


def write_cog(source: Path, out: Path, resampling: str, native: Grid | None = None,
              regrid: str = "nearest") -> Path:
    """Copy a raster (the VRT mosaic of a run's block parts) to a COG at ``out``: GDAL streams it window by
    window, compressing and building overviews (``resampling``: their method). A scene read at the
    model's GSD (``native``: the file's own grid) is resampled back through a warped VRT (``regrid``: nearest for
    classes, bilinear for probabilities), so no whole raster is ever held in memory (the bounded-memory invariant).

    Its memory must not grow with the scene: GDAL keeps up to 100 of a VRT's sources open (each with its own
    buffers) and its threaded overview builder holds several chunks per thread, so a few parts stay open and the
    copy runs on the task's own thread (Dask's workers are the parallelism; the bytes are the same either way)."""
    with rasterio.Env(GDAL_MAX_DATASET_POOL_SIZE=COG_OPEN_PARTS), rasterio.open(source) as staged, \
            _on_grid(staged, native, Resampling[regrid]) as src:
        rasterio.shutil.copy(src, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK, OVERVIEWS="AUTO",
                             RESAMPLING=resampling, BIGTIFF="IF_SAFER", NUM_THREADS=1)
    return out


def _on_grid(staged: rasterio.DatasetReader, native: Grid | None,
             regrid: Resampling) -> WarpedVRT | contextlib.nullcontext:
    if native is None:
        return contextlib.nullcontext(staged)
    return WarpedVRT(staged, crs=staged.crs, transform=native.transform, width=native.width, height=native.height,
                     resampling=regrid, nodata=staged.nodata, NUM_THREADS="ALL_CPUS")


# GeoPackage 1.2 for every GeoPackage geoseg writes: our bundled GDAL would write 1.4, which QGIS 3.22 (GDAL 3.4-3.6)
# flags as "partially supported"
GPKG_CREATE = {"VERSION": "1.2"}


def vector_paths(path: str | os.PathLike[str], layers: Iterable[str]) -> list[Path]:
    """Files a vector output writes: one GeoPackage with every layer, or for the single-layer formats
    (FlatGeobuf, GeoParquet, GeoJSON) one file per layer named ``<stem>_<layer><ext>``."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VECTOR_FORMATS:
        raise OutputError(f"{path}: unknown vector format {ext or '(no extension)'}; use one of "
                          f"{', '.join(VECTOR_FORMATS)}")
    if ext == ".gpkg":
        return [path]
    if ext == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise OutputError(f"{path}: GeoParquet output needs pyarrow; pip install 'geoseg[parquet]' or use .gpkg") \
                from None
    return [path.with_name(f"{path.stem}_{layer}{path.suffix}") for layer in layers]


class VectorSink:
    """Vector layers appended in batches, so no list of all polygons is held until the end.

    Everything is staged in a temporary GeoPackage (each batch one SQLite transaction, R-tree spatial index
    per layer, QML styles in ``layer_styles`` on commit). A ``.gpkg`` output is that file renamed into place;
    the single-layer formats are streamed from it layer by layer (Arrow batches), never loaded whole.
    """

    def __init__(self, path: str | os.PathLike[str], layers: dict[str, str], crs: object,
                 styles: dict[str, LayerStyle] | None = None, flush_at: int = 5_000,
                 flush_coords: int = 250_000, stage: Path | None = None) -> None:
        self.path = Path(path)
        self.targets = dict(zip(layers, vector_paths(self.path, layers))) if self.path.suffix.lower() != ".gpkg" \
            else {}
        self.stage = stage  # a folder for every temporary file (else temporary names beside the output)
        self.tmp = stage / "vectors.gpkg" if stage else temp_name(self.path.with_suffix(".gpkg"))
        self.converted: list[Path] = []
        self.crs = _ogr_crs(crs)
        # a batch is written at 5000 features or 250k vertices (4 MB of coordinates), whichever comes first: road
        # polygons of a big scene have thousands of vertices each
        self.flush_at, self.flush_coords = flush_at, flush_coords
        self.geometry = dict(layers)
        self.styles = styles or {}
        self.fields = {name: _schema(geometry) for name, geometry in layers.items()}
        # waiting features are held as WKB and plain arrays, what GDAL is handed anyway: a fraction of the memory
        # of GeoDataFrames with live GEOS geometries (and no pandas bookkeeping that outlives them)
        self.pending: dict[str, list[tuple[np.ndarray, list[np.ndarray]]]] = {name: [] for name in layers}
        self.rows: dict[str, int] = {name: 0 for name in layers}
        self.coords: dict[str, int] = {name: 0 for name in layers}
        self.written: dict[str, int] = {name: 0 for name in layers}
        # every layer is created (empty, with its final schema) now: an unwritable folder fails before any work,
        # and GDAL, SQLite and PROJ set up their writer state (~20 MB) once here, not in the middle of the run
        try:
            for layer, fields in self.fields.items():
                self._write(layer, np.empty(0, object), list(fields.values()))
        except BaseException:  # e.g. Ctrl-C while the file is being created: no caller holds this sink yet
            self.abort()
            raise

    def add(self, layer: str, frame: gpd.GeoDataFrame) -> None:
        if len(frame):
            geoms = frame.geometry.values
            self.pending[layer].append((shapely.to_wkb(geoms), [np.asarray(frame[f]) for f in self.fields[layer]]))
            self.rows[layer] += len(frame)
            self.coords[layer] += int(shapely.get_num_coordinates(geoms).sum())
        if self.rows[layer] >= self.flush_at or self.coords[layer] >= self.flush_coords:
            self._flush(layer)

    def add_wkb(self, layer: str, wkb: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Features already encoded (a vector part, :mod:`geoseg.parts`): WKB and their attribute columns."""
        if len(wkb):
            self.pending[layer].append((wkb, [columns[f] for f in self.fields[layer]]))
            self.rows[layer] += len(wkb)
            self.coords[layer] += sum(len(g) for g in wkb) // 16  # two doubles a vertex
        if self.rows[layer] >= self.flush_at or self.coords[layer] >= self.flush_coords:
            self._flush(layer)

    def _flush(self, layer: str) -> None:
        batch = self.pending[layer]
        if batch:
            self._write(layer, np.concatenate([wkb for wkb, _ in batch]),
                        [np.concatenate(column) for column in zip(*(data for _, data in batch))])
            self.pending[layer], self.rows[layer], self.coords[layer] = [], 0, 0

    def _write(self, layer: str, wkb: np.ndarray, data: list[np.ndarray]) -> None:
        exists = self.tmp.exists()
        options = {} if exists else {"dataset_options": GPKG_CREATE}
        pyogrio.raw.write(str(self.tmp), wkb, data, list(self.fields[layer]), layer=layer, driver="GPKG",
                          geometry_type=self.geometry[layer], crs=self.crs, promote_to_multi=False, append=exists,
                          layer_options={"SPATIAL_INDEX": "YES"}, **options)
        self.written[layer] += len(wkb)

    def commit(self) -> list[Path]:
        """Flush, add the styles and rename (or convert) into place; returns the files written."""
        try:
            staged = self.finish()
            for tmp, target in staged:  # all complete before any is renamed in: not one atomic_path each
                os.replace(tmp, target)
            return [target for _, target in staged]
        finally:
            self.abort()

    def finish(self) -> list[tuple[Path, Path]]:
        """Flush, add the styles and convert: ``(temporary file, final path)`` pairs, complete, to be renamed."""
        for layer in self.pending:
            self._flush(layer)
        if self.styles:
            write_layer_styles(self.tmp, self.styles)
        if not self.targets:
            return [(self.tmp, self.path)]
        staged = []
        for layer, target in self.targets.items():
            tmp = self.stage / target.name if self.stage else temp_name(target)
            self.converted.append(tmp)
            convert_layer(self.tmp, layer, tmp, self.path.suffix.lower(), self.geometry[layer])
            staged.append((tmp, target))
        return staged

    def abort(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.tmp}{suffix}").unlink(missing_ok=True)
        for tmp in self.converted:
            tmp.unlink(missing_ok=True)


def write_layer_styles(gpkg: Path, styles: dict[str, LayerStyle]) -> None:
    """QGIS's ``layer_styles`` table (registered as an attributes table), one default style per layer."""
    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        geom_col = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
        db.execute(LAYER_STYLES_SQL)
        db.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName,"
            " styleQML, styleSLD, useAsDefault, description, owner, ui) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', '')",
            [(s.layer, geom_col.get(s.layer, "geom"), s.layer, s.qml, s.sld, f"geoseg default style for {s.layer}")
             for s in styles.values() if s.layer in geom_col])
        db.execute("INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description) "
                   "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles')")


def convert_layer(gpkg: Path, layer: str, out: Path, ext: str, geometry: str) -> None:
    """Stream one layer of the staging GeoPackage into a single-layer file, Arrow batch by Arrow batch."""
    if ext == ".parquet":
        _to_geoparquet(gpkg, layer, out, geometry)
        return
    with pyogrio.raw.open_arrow(gpkg, layer=layer, batch_size=ARROW_BATCH) as (meta, reader):  # C stream: no pyarrow
        crs = meta["crs"]
        pyogrio.write_arrow(reader, out, layer=layer, driver=VECTOR_FORMATS[ext], geometry_name=meta["geometry_name"]
                            or "geom", geometry_type=geometry, crs=crs)


def _to_geoparquet(gpkg: Path, layer: str, out: Path, geometry: str) -> None:
    """GeoParquet 1.0 (WKB geometry, PROJJSON CRS): GDAL here has no Parquet driver, so pyarrow writes it."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise OutputError(f"{out}: GeoParquet output needs pyarrow; pip install 'geoseg[parquet]' or use .gpkg") \
            from None
    from pyproj import CRS

    with pyogrio.raw.open_arrow(gpkg, layer=layer, use_pyarrow=True, batch_size=ARROW_BATCH) as (meta, reader):
        geom = meta["geometry_name"] or "wkb_geometry"
        geo = {"version": "1.0.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": [geometry],
                                        "crs": CRS.from_user_input(meta["crs"]).to_json_dict()}}}
        fields = [f.with_name("geometry") if f.name == geom else f for f in reader.schema]
        schema = pa.schema(fields, metadata={b"geo": json.dumps(geo).encode()})
        with pq.ParquetWriter(out, schema) as writer:
            for batch in reader:
                writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))


def _schema(geometry: str) -> dict[str, np.ndarray]:
    """A layer's attribute columns, empty, with the types they are written with."""
    floats = ("length_m", "width_m", "score") if geometry == "LineString" else \
        ("area_m2", "perimeter_m", "score", "orientation")
    return {"id": np.empty(0, np.int64), "class": np.empty(0, object), **{c: np.empty(0) for c in floats}}


def _ogr_crs(crs: object) -> str:
    """The CRS as GDAL is given it by geopandas: ``EPSG:n`` when it has a code, else WKT1."""
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg else parsed.to_wkt("WKT1_GDAL")
