"""Open and validate a scene, read a block's pixels by window, normalise them for the model.

No code path here reads a whole scene: every read is a window (the bounded-memory invariant).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.errors import SceneError, SceneNotFoundError, SceneReadError
from geoseg.grid import Grid
from geoseg.tiling import reflect_index
from geoseg.remote import env_for, forget_remote, gdal_path, is_remote, read_head, redact, remote_error, remote_stat

# GDAL opens inputs only through this driver (the no-code-from-data invariant's allow-list); COGs are read by
# GTiff too.
SCENE_DRIVER = "GTiff"
# ``--resample``: how imagery is read on the model's grid (:data:`geoseg.grid.RESAMPLE_EPSILON`: when it is not)
SCENE_RESAMPLING = Resampling.bilinear

log = logging.getLogger("geoseg")
_WARNED_STRIPED: set[str] = set()


@dataclass(frozen=True)
class SceneInfo:
    """What geoseg needs to know about a scene, read once when it is opened.

    ``grid`` is the grid the pipeline runs on. That is the file's own grid, unless the scene is read at another
    GSD (:meth:`at_resolution`): then ``native`` holds the file's grid (where raster outputs go back to) and every
    read goes through a GDAL warped VRT onto this one.
    """

    path: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    data_bands: int  # bands that are not alpha (alpha only masks)
    native: Grid | None = None  # the file's own grid when read on another one (``--resample``)
    version: str = ""  # a remote scene's size and ETag/Last-Modified when opened: a replaced object is re-read

    def __repr__(self) -> str:  # Dask logs a failed task's arguments: a scene URL's credentials stay out of them
        return f"SceneInfo({redact(self.path)!r}, {self.width}x{self.height}, {self.count} bands, {self.dtype})"

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> CRS:
        assert self.grid.crs is not None, "an opened scene always has a CRS"
        return self.grid.crs

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in CRS units squared (works for rotated transforms)."""
        return self.grid.pixel_area

    @property
    def gsd_m(self) -> float:
        """Pixel size in ground metres (the side of a square pixel of the same area)."""
        return self.grid.gsd_m

    @property
    def file_grid(self) -> Grid:
        """The grid of the file on disk (outputs are written on it)."""
        return self.native or self.grid

    def at_resolution(self, gsd_m: float) -> "SceneInfo":
        """The scene read on its file's grid at ``gsd_m`` ground metres (:meth:`Grid.at_resolution`): on the
        file's own grid when that is within :data:`geoseg.grid.RESAMPLE_EPSILON` of ``gsd_m`` already."""
        file = self.file_grid  # from the file's own grid, even if this scene is resampled already
        grid = file.at_resolution(gsd_m)
        return dataclasses.replace(self, grid=grid, native=None if grid == file else file)


@contextlib.contextmanager
def open_file(path: str) -> Iterator[DatasetReader]:
    """The scene file opened by the GeoTIFF driver; a remote one through GDAL's network layer, in its settings."""
    with env_for(path), rasterio.open(gdal_path(path), driver=SCENE_DRIVER) as src:
        yield src


def open_scene(path: str | os.PathLike[str]) -> SceneInfo:
    """Open and validate a scene (a file, or a URL: :mod:`geoseg.remote`); raise a one-line :class:`SceneError`
    naming the file and the fix."""
    path = str(path)
    remote = is_remote(path)
    if not remote and not Path(path).exists():
        raise SceneNotFoundError(f"{path}: no such file; check the path (relative paths start in {os.getcwd()})")
    version = ""
    if remote:  # one HEAD (also GDAL's cache of this object dropped): 404/403/timeout answer here
        head = remote_stat(path)
        version = f"{head.size}|{head.etag or head.last_modified}"
    try:
        with warnings.catch_warnings():  # rasterio warns on missing georeferencing; we raise a clearer error below
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_file(path) as src:
                alpha = sum(ci == ColorInterp.alpha for ci in src.colorinterp)
                info = SceneInfo(path, Grid.of(src), src.count, src.dtypes[0], src.nodata, src.count - alpha,
                                 version=version)
                gcps, _ = src.gcps
                has_rpcs = src.rpcs is not None
                striped = src.block_shapes[0][1] >= src.width > 1024
    except RasterioIOError as err:
        reason = _gdal_reason(err, gdal_path(path))
        if remote and "not recognized as being in a supported file format" not in reason:
            raise remote_error(path, reason) from None
        kind = sniff_format(path)
        reason = f"a {kind} file" if kind else reason
        raise SceneError(f"{path}: not a GeoTIFF ({reason}); geoseg accepts only GeoTIFF/COG scenes: convert it "
                         f"first, e.g. 'gdal_translate -of COG {path} {Path(path).with_suffix('.tif').name}'") from None
    if info.grid.crs is None or info.transform == Affine.identity():
        if gcps or has_rpcs:
            kind = "GCPs" if gcps else "RPCs"
            raise SceneError(f"{path}: georeferenced only by {kind}; warp it to a map grid first, "
                             f"e.g. 'gdalwarp {'-rpc ' if not gcps else ''}-t_srs EPSG:XXXX {path} warped.tif'")
        no_crs, no_grid = info.grid.crs is None, info.transform == Affine.identity()
        what = " and ".join(w for w, missing in (("no CRS", no_crs), ("no geotransform", no_grid)) if missing)
        fix = " ".join(f for f, missing in (("-a_srs EPSG:XXXX", no_crs), ("-a_ullr ULX ULY LRX LRY", no_grid))
                       if missing)
        raise SceneError(f"{path}: has {what}; georeference it first, e.g. 'gdal_edit.py {fix} {path}'")
    if info.transform.is_degenerate:
        raise SceneError(f"{path}: degenerate geotransform {tuple(info.transform)[:6]}; fix its georeferencing")
    if remote and striped and path not in _WARNED_STRIPED:
        # readable, only slower: each window fetches whole rows of the file, not just its tiles
        _WARNED_STRIPED.add(path)
        log.warning("%s: a striped GeoTIFF, not a tiled COG: each window read fetches whole rows over the network; "
                    "convert it once for fast reads (gdal_translate -of COG in.tif out.tif)", path)
    return info


# leading bytes of formats a scene often comes as: named in the error instead of GDAL's "not recognized as being in
# a supported file format", which reads as if GDAL could not read them (it can; geoseg only opens GeoTIFFs)
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
          (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"PK\x03\x04", "ZIP"), (b"GIF8", "GIF"), (b"BM", "BMP"),
          (b"\x89HDF", "HDF5"), (b"CDF", "netCDF"))


def sniff_format(path: str) -> str | None:
    """The format a non-GeoTIFF file is in, from its first bytes (None when not one we name); a remote one's are
    read by a range request, which raises the network's own error (e.g. a server that ignores ranges)."""
    if is_remote(path):
        head = read_head(path)
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            return None
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _gdal_reason(err: Exception, path: str = "") -> str:
    """The first line of a GDAL error, without the path GDAL repeats.

    rasterio's read errors only say "see previous exception"; GDAL's own message is their ``__cause__``.
    """
    if err.__cause__ is not None and "previous exception" in str(err):
        err = err.__cause__  # type: ignore[assignment]
    text = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    for name in {path, os.path.basename(path)} - {""}:
        text = text.replace(f"'{name}' ", "").replace(f"{name}, ", "").replace(f"{name}: ", "")
    return text[:200]


_HANDLES = threading.local()
_HANDLES_PER_THREAD = 2


def scene_handle(info: SceneInfo) -> DatasetReader | WarpedVRT:
    """This thread's open reader of the scene on ``info``'s grid, kept between blocks.

    Neighbouring blocks overlap by their halo and share GDAL blocks: an open handle keeps them in GDAL's block
    cache and skips the re-open (for a remote scene: the header request too). GDAL handles are not thread-safe,
    so each thread has its own; a few per thread at most, keyed by the file's identity (a remote object's
    version) so a replaced file is re-opened.
    """
    if is_remote(info.path):  # the object's version as opened: a long-lived worker re-reads a replaced object
        key: tuple = (info.path, info.version, info.transform, info.width, info.height)
    else:
        st = os.stat(info.path)
        key = (info.path, st.st_ino, st.st_size, st.st_mtime_ns, info.transform, info.width, info.height)
    cache: OrderedDict[tuple, tuple[DatasetReader, DatasetReader | WarpedVRT]] | None = getattr(_HANDLES, "cache",
                                                                                                None)
    if cache is None:
        cache = _HANDLES.cache = OrderedDict()
    entry = cache.get(key)
    if entry is None:
        if info.version:
            forget_remote(info.path, info.version)
        src = rasterio.open(gdal_path(info.path), driver=SCENE_DRIVER)
        entry = cache[key] = (src, _on_grid(src, info))
        while len(cache) > _HANDLES_PER_THREAD:
            _close(cache.popitem(last=False)[1])
    cache.move_to_end(key)
    return entry[1]


def _close(entry: tuple[DatasetReader, DatasetReader | WarpedVRT]) -> None:
    src, reader = entry
    if reader is not src:
        reader.close()
    src.close()


def forget_handles() -> None:
    """Close this thread's kept handles (after a read error: the next read reopens the file)."""
    cache = getattr(_HANDLES, "cache", None)
    while cache:
        _close(cache.popitem()[1])


def read_block(info: SceneInfo, bands: tuple[int, ...], span: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read the pixels of window ``span`` (it may pass the scene edges) with reflect padding.

    Returns ``(data, valid)``: data ``(bands, h, w)`` in the scene dtype and a boolean validity mask that
    honours nodata values, internal masks and alpha bands (GDAL's dataset mask) and non-finite floats.
    """
    (row0, row1), (col0, col1) = span.toranges()
    ri = reflect_index(np.arange(int(row0), int(row1)), info.height)
    ci = reflect_index(np.arange(int(col0), int(col1)), info.width)
    r0, c0 = int(ri.min()), int(ci.min())
    win = Window(c0, r0, int(ci.max()) - c0 + 1, int(ri.max()) - r0 + 1)
    # Raised outside the except clause: the error must cross from a Dask worker, and rasterio's chained GDAL
    # errors (its __context__) do not unpickle, which would turn it into a bare Exception on the client.
    reason = ""
    try:
        with env_for(info.path):  # on the worker: each reads its own blocks, in the same GDAL settings
            src = scene_handle(info)
            data = src.read(list(bands), window=win)
            mask = src.dataset_mask(window=win)
    except (RasterioError, OSError) as err:
        reason = _gdal_reason(err, gdal_path(info.path))
        forget_handles()
    where = f"at rows {win.row_off}-{win.row_off + win.height}, cols {win.col_off}-{win.col_off + win.width}"
    if reason and is_remote(info.path):
        raise remote_error(info.path, reason, where)
    if reason:
        raise SceneReadError(f"{info.path}: read failed {where} ({reason}); "
                             "the file is corrupt or truncated: re-download or re-export it")
    # past a scene edge: gather the mirrored rows/columns one axis at a time, only on the axes that need it
    # (a 2-D np.ix_ gather copies the whole block through a fancy index: many times slower)
    if not (ri[0] == r0 and len(ri) == win.height):
        data, mask = data.take(ri - r0, axis=1), mask.take(ri - r0, axis=0)
    if not (ci[0] == c0 and len(ci) == win.width):
        data, mask = data.take(ci - c0, axis=2), mask.take(ci - c0, axis=1)
    valid = mask > 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return data, valid


def _on_grid(src: rasterio.DatasetReader, info: SceneInfo) -> DatasetReader | WarpedVRT:
    """The open file itself, or a warped VRT of it on ``info``'s grid (``--resample``): GDAL resamples only the
    windows read. The warper honours nodata, internal masks and alpha bands as invalid source pixels; an alpha
    band (the file's, else one added) carries validity onto the new grid, so ``dataset_mask`` means what it does
    on the file."""
    if info.native is None:
        return src
    return WarpedVRT(src, crs=src.crs, transform=info.transform, width=info.width, height=info.height,
                     resampling=SCENE_RESAMPLING, add_alpha=info.data_bands == info.count)


def to_unit(data: np.ndarray, scale: float) -> np.ndarray:
    """Pixel values to the model's 0..1 range as the bundle says (``data / scale``), clipped; NaN becomes 0.

    The first half of :func:`normalise`; training applies it before augmentation (which works on 0..1 images)
    and then calls :func:`normalise` with ``scale=1``, so both sides standardise in the same function."""
    return np.clip(np.nan_to_num(np.divide(data, scale, dtype=np.float32)), 0.0, 1.0)


def normalise(data: np.ndarray, valid: np.ndarray, scale: float, mean: tuple[float, ...],
              std: tuple[float, ...]) -> np.ndarray:
    """``(clip(data / scale, 0, 1) - mean) / std`` per band; invalid pixels become 0 (the mean).

    The one normalisation of training and inference (the one-normalisation invariant: no train/serve skew).
    Folded into one multiply-add and one clip per pixel: ``x / (scale * std) - mean / std``, clipped to the
    standardised image of 0..1.
    """
    std64, mean64 = np.asarray(std, np.float64), np.asarray(mean, np.float64)
    gain = (1.0 / (scale * std64)).astype(np.float32)[:, None, None]
    offset = (-mean64 / std64).astype(np.float32)[:, None, None]
    out = np.multiply(data, gain, dtype=np.float32)
    out += offset
    np.clip(out, offset, ((1.0 - mean64) / std64).astype(np.float32)[:, None, None], out=out)
    if not valid.all():
        out[:, ~valid] = 0.0
    return out
