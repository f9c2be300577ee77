"""Checks on the paths a run reads and writes, made before anything heavy is imported or computed.

No output may resolve to an input, whatever the flags (DESIGN invariant 5), and no two outputs may share a file.
Identity is the file's (st_dev, st_ino) when it exists, which catches symlinks and hard links; a path not yet
written is compared by its resolved path. Only the standard library is used here, so the CLI can run these
checks (and answer a user error) in a fraction of a second. A remote input is never an output (outputs are local
files).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlparse

from geoseg.errors import ConfigError, OutputError, SceneError, SceneNotFoundError
from geoseg.remote import is_remote, local_path

PathLike = str | os.PathLike[str]
RASTER_SUFFIXES = (".tif", ".tiff")  # every raster geoseg writes is a (Cloud Optimized) GeoTIFF
VECTOR_FORMATS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet", ".geojson": "GeoJSON"}


def check_input(path: PathLike, what: str = "scene") -> str:
    """The location to read: a readable file on disk (a ``file://`` URL is one), or a remote URL/key
    (:mod:`geoseg.remote`: its name is checked here, the object when it is opened). Other GDAL virtual paths,
    folders and symlink loops are named as such."""
    text = str(path)
    local = local_path(text)
    if local is not None:
        text = local
    elif is_remote(text):
        check_remote_name(text, what)
        return text
    elif text.startswith("/vsi"):
        prefix = text.split("/")[1]
        raise SceneError(f"{text}: GDAL virtual paths (/{prefix}/) are not read; geoseg reads {what}s from files "
                         "and from URLs (https://, s3://, gs://, az:// or /vsicurl/, /vsis3/, /vsigs/, /vsiaz/): "
                         "extract it first (e.g. unzip, or gdal_translate -of COG in out.tif)")
    p = Path(text)
    try:
        os.stat(p)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SceneError(f"{text}: symlink loop (a link that points back to itself); point it at the real "
                             "file") from None
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            dangling = " (a broken symlink)" if p.is_symlink() else ""
            raise SceneNotFoundError(f"{text}: no such file{dangling}; check the path (relative paths start in "
                                     f"{os.getcwd()})") from None
        raise SceneError(f"{text}: cannot be read ({err.strerror}); check its permissions") from None
    if os.path.isdir(p):
        raise SceneError(f"{text}: is a folder, not a {what} file; give a GeoTIFF path (geoseg batch runs every "
                         "scene of a folder)" if what == "scene" else f"{text}: is a folder, not a {what} file")
    return text


def check_remote_name(url: str, what: str = "scene") -> None:
    """A remote scene is named as a GeoTIFF (the allow-list GDAL applies before any request, unless the
    environment sets CPL_VSIL_CURL_ALLOWED_EXTENSIONS itself)."""
    name = urlparse(url.split("://", 1)[1] if "://" in url else url).path
    if "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in os.environ and not name.lower().endswith(RASTER_SUFFIXES):
        raise SceneError(f"{url}: not named as a GeoTIFF (.tif/.tiff); geoseg reads remote GeoTIFF/COG {what}s "
                         "only: convert it to a COG first (gdal_translate -of COG)")


def check_output(path: PathLike, overwrite: bool) -> Path:
    """Fail before any compute if ``path`` is a folder, exists (without overwrite) or its folder is not writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name inside it, e.g. {path / ('out' + path.suffix)}")
    if (path.exists() or path.is_symlink()) and not overwrite:
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


def check_raster_suffix(path: PathLike, option: str) -> None:
    """Raster outputs are GeoTIFFs: a name that says otherwise (``x.png``) would mislead every reader of it."""
    suffix = Path(path).suffix.lower()
    if suffix not in RASTER_SUFFIXES:
        stem = Path(path).with_suffix(".tif")
        raise ConfigError(f"{option} {path}: geoseg writes rasters as Cloud Optimized GeoTIFF, which needs a .tif "
                          f"or .tiff name; use {option} {stem} (convert afterwards with gdal_translate if needed)")


def _identity(path: PathLike) -> tuple[object, ...]:
    """What makes two paths one file: device and inode when it exists (symlinks followed), else the resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def check_distinct(outputs: Iterable[tuple[str, PathLike]], inputs: Mapping[str, PathLike | None]) -> None:
    """Refuse an output that is an input (same file, symlink or hard link) and two outputs on one file.

    ``outputs``: (label, path) pairs such as ("--raster-out", "c.tif"); ``inputs``: label -> path (None: absent).
    """
    seen_in: dict[tuple[object, ...], tuple[str, PathLike]] = {}
    for label, path in inputs.items():
        if path is not None and Path(path).exists():
            seen_in.setdefault(_identity(path), (label, path))
    seen_out: dict[tuple[object, ...], tuple[str, PathLike]] = {}
    for label, path in outputs:
        key = _identity(path)
        if key in seen_in:
            what, src = seen_in[key]
            same = "" if os.path.abspath(src) == os.path.abspath(path) else f" ({src})"
            raise OutputError(f"{label} {path}: is the {what}{same}; an input is never overwritten, even with "
                              "--overwrite: write to another path")
        if key in seen_out:
            other, first = seen_out[key]
            raise OutputError(f"{label} {path}: the same file as {other} {first}; give each output its own path")
        seen_out[key] = (label, path)
