"""Remote scenes: URLs and object-store keys read window by window through GDAL's virtual file systems.

One place for everything remote: which paths are remote (:func:`is_remote`), the GDAL path a URL is read as
(:func:`gdal_path`), GDAL's HTTP settings (:func:`remote_env`, entered around every open and every block read, on
the driver and on each worker, so a worker reads its own blocks with its own credentials), the one-line errors
(:func:`remote_error`), a HEAD request for fingerprints (:func:`remote_stat`) and the redaction of credentials
from any text shown to a user (:func:`redact`).

Credentials are never geoseg's: GDAL reads them from the standard environment (AWS_*, GS_*/GOOGLE_APPLICATION_
CREDENTIALS, AZURE_*, GDAL_HTTP_*), from ~/.aws and friends, or from the cloud's instance metadata (IAM roles).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from geoseg.errors import GeosegError, SceneError, SceneNotFoundError, SceneReadError

# URL scheme -> GDAL virtual file system; the explicit /vsi forms are accepted as they are
VSI_FOR_SCHEME = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
REMOTE_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/")

# GDAL's settings for remote reads. A variable the user sets in the environment wins (GDAL reads it from there).
GDAL_REMOTE_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",   # no directory listing, no probing for sidecar files
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",  # the GeoTIFF allow-list, before any request is made
    "GDAL_HTTP_MAX_RETRY": "4",                    # 429/5xx/timeouts retried, the delay doubling each time
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
    # a window's ranges one after another, through the range cache all threads share: threads reading neighbouring
    # blocks then fetch their shared tiles once (parallel requests bypass it); the block threads are the parallelism
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",   # neighbouring tiles in one range
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",        # a COG's header and tile index in the first request
    "CPL_VSIL_CURL_CACHE_SIZE": str(256 << 20),    # downloaded ranges, per process: a block's halo is not refetched
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 << 20),               # per open file
}
# environment variables whose values are secrets: replaced by *** wherever they would be shown
_SECRET_NAME = re.compile(r"^(AWS|GS|GOOGLE|AZURE|AZ|GDAL|CPL|OSS|SWIFT)_\w*(SECRET|TOKEN|PASSWORD|PASSWD|USERPWD|"
                          r"SAS|KEY|BEARER|CONNECTION_STRING|CREDENTIAL|HEADERS)\w*$")
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s'\"]*@)?(?P<rest>[^\s'\"?#]*)"
                  r"(?P<query>\?[^\s'\"#]*?(?=[:;,.)\]]*(?:[\s'\"#]|$)))?")

def is_remote(path: str | os.PathLike[str]) -> bool:
    """A URL or key geoseg reads through GDAL's network file systems (not ``file://``: that is a local path)."""
    text = str(path)
    return text.startswith(REMOTE_PREFIXES) or urlparse(text).scheme.lower() in VSI_FOR_SCHEME and "://" in text


def local_path(path: str) -> str | None:
    """The local file behind a ``file://`` URL (also as ``/vsicurl/file://``), else None: such a path is checked
    and read as the local file it names, never through the network layer."""
    text = path[len("/vsicurl/"):] if path.startswith("/vsicurl/") else path
    if not text.lower().startswith("file:"):
        return None
    url = urlparse(text)
    if url.netloc not in ("", "localhost"):
        raise SceneError(f"{redact(path)}: a file:// URL on another host ({url.netloc}); give a local path or an "
                         "https:// URL")
    return unquote(url.path)


def gdal_path(path: str) -> str:
    """The path GDAL opens: ``https://h/a.tif`` -> ``/vsicurl/https://h/a.tif``, ``s3://b/k`` -> ``/vsis3/b/k``."""
    if path.startswith(REMOTE_PREFIXES) or not is_remote(path):
        return path
    scheme, rest = path.split("://", 1)
    prefix = VSI_FOR_SCHEME[scheme.lower()]
    return prefix + path if prefix == "/vsicurl/" else prefix + rest


def remote_env() -> Any:
    """The ``rasterio.Env`` every remote open and read runs in (options are thread-local: each thread enters it)."""
    import rasterio

    redact_logs()
    return rasterio.Env(**{k: v for k, v in GDAL_REMOTE_OPTIONS.items() if k not in os.environ})


def env_for(path: str) -> Any:
    """:func:`remote_env` for a remote path; nothing for a local one (local reads keep GDAL's defaults)."""
    return remote_env() if is_remote(path) else contextlib.nullcontext()


def redact(text: str) -> str:
    """``text`` without credentials: URLs lose their user:password@ and their query string (where signatures
    and tokens live), and the value of any secret-named environment variable becomes ``***``."""
    text = _URL.sub(lambda m: m["scheme"] + m["rest"] + ("?…" if m["query"] else ""), text)
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.match(name) and value in text:
            text = text.replace(value, "***")
    return text


class RedactFilter(logging.Filter):
    """Redacts every record of the ``geoseg`` logger (messages name scene URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = record.getMessage(), None
        record.msg = redact(str(record.msg))
        return True


@functools.cache
def redact_logs() -> None:
    """Redact geoseg's own log records and GDAL's messages as rasterio logs them (a retry warning names the signed
    URL). Process-wide, so applied by :func:`geoseg.startup.configure` and on first remote use, not on import."""
    for name in ("geoseg", "rasterio", "rasterio._env", "rasterio._err", "rasterio._base", "rasterio._io"):
        logging.getLogger(name).addFilter(RedactFilter())


def remote_error(path: str, message: str, reading: str = "") -> GeosegError:
    """The one-line error for GDAL's ``message`` about remote ``path`` (``reading``: where a block read failed).

    GDAL's own text is kept only when it matches none of the known cases, and redacted: an object store's error
    body can echo the key id of the request."""
    shown, low = redact(path), message.lower()
    where = f" {reading}" if reading else ""
    if re.search(r"\b404\b|nosuchkey|nosuchbucket|not found|does not exist", low):
        return SceneNotFoundError(f"{shown}: not found{where} (HTTP 404, no such object, or the host cannot be "
                                  "reached); check the URL or bucket/key")
    if re.search(r"\b40[13]\b|access ?denied|forbidden|signaturedoesnotmatch|invalidaccesskeyid|authoriz", low):
        return SceneError(f"{shown}: access denied{where} (HTTP 403/401); check the credentials in the environment "
                          "(AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*, GDAL_HTTP_*) or the URL's signature")
    if "range" in low and "not supported" in low:
        return SceneError(f"{shown}: the server ignores HTTP range requests; geoseg reads remote scenes window by "
                          "window: serve it from a server with range support (any object store, nginx) or "
                          "download it first")
    status = re.search(r"\b(5\d\d)\b", low)
    if status:
        return SceneReadError(f"{shown}: the server failed{where} (HTTP {status.group(1)}, still after "
                              "GDAL_HTTP_MAX_RETRY retries); try again later")
    if "timed out" in low or "timeout" in low:
        return SceneReadError(f"{shown}: timed out{where} (GDAL_HTTP_TIMEOUT, after GDAL_HTTP_MAX_RETRY retries); "
                              "check the network, or raise GDAL_HTTP_TIMEOUT in the environment")
    reason = redact(message.splitlines()[0] if message.strip() else "unknown error")[:200]
    return SceneReadError(f"{shown}: remote read failed{where} ({reason}); check the URL and the network")


# rasterio wraps no VSIGetFileMetadata; GDAL's own HEAD signs S3/GCS/Azure requests with the same credentials,
# endpoint and proxy settings as the reads, so the fingerprint sees what the reads will. The symbols come from the
# libgdal rasterio itself loaded (a handle's lookup searches the module's dependencies).
_GDAL_LOCK = threading.Lock()
_GDAL: Any = None


def _libgdal() -> Any:
    global _GDAL
    with _GDAL_LOCK:
        if _GDAL is None:
            import rasterio._base

            lib = ctypes.CDLL(rasterio._base.__file__)
            lib.VSIGetFileMetadata.restype = ctypes.POINTER(ctypes.c_char_p)
            lib.VSIGetFileMetadata.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            lib.CSLDestroy.argtypes = [ctypes.c_void_p]
            lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            lib.VSICurlClearCache.argtypes = []
            lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
            lib.VSIFOpenL.restype = ctypes.c_void_p
            lib.VSIFOpenL.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            lib.VSIFReadL.restype = ctypes.c_size_t
            lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
            lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
            _GDAL = lib
        return _GDAL


@dataclass(frozen=True)
class RemoteStat:
    """What a HEAD request says about a remote object: enough to tell a replaced object from the same one."""

    size: int
    etag: str
    last_modified: str


def remote_stat(path: str) -> RemoteStat:
    """HEAD ``path`` (no download), bypassing GDAL's cache of earlier answers; raises :func:`remote_error`'s."""
    lib, vsi = _libgdal(), gdal_path(path).encode()
    with remote_env():
        lib.VSICurlPartialClearCache(vsi)
        meta = lib.VSIGetFileMetadata(vsi, b"HEADERS", None)
        headers = {}
        i = 0
        while meta and meta[i]:
            key, _, value = meta[i].decode("utf-8", "replace").partition("=")
            headers[key.strip().lower()] = value.strip()
            i += 1
        if meta:
            lib.CSLDestroy(ctypes.cast(meta, ctypes.c_void_p))
    if not headers:
        raise _open_error(path)
    # GDAL's object-store HEAD can be a first range GET: then the object's size is the range's total
    size = headers.get("content-range", "").rpartition("/")[2] or headers.get("content-length") or "-1"
    return RemoteStat(int(size) if size.isdigit() else -1, headers.get("etag", "").strip('"'),
                      headers.get("last-modified", ""))


def _open_error(path: str) -> GeosegError:
    """Why a HEAD failed, in words: GDAL's open says it (its message carries the HTTP status)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    _libgdal().VSICurlPartialClearCache(gdal_path(path).encode())  # not GDAL's cached "does not exist"
    try:
        with remote_env(), rasterio.open(gdal_path(path), driver="GTiff"):
            pass
    except RasterioIOError as err:
        return remote_error(path, str(err))
    return SceneReadError(f"{redact(path)}: the server answered no headers to a HEAD request; check the URL")


_SEEN_VERSIONS: dict[str, str] = {}


def forget_remote(path: str, version: str) -> None:
    """Drop GDAL's cached ranges of ``path`` when this process last read another version of it (a worker that
    outlives a batch must not mix an object's old bytes with its new ones)."""
    with _GDAL_LOCK:
        previous = _SEEN_VERSIONS.get(path)
        _SEEN_VERSIONS[path] = version
    if previous is not None and previous != version:
        _libgdal().VSICurlPartialClearCache(gdal_path(path).encode())


def clear_cache() -> None:
    """Forget every remote range GDAL holds in memory (benchmarks: a second pass must fetch again)."""
    _libgdal().VSICurlClearCache()


def read_head(path: str, size: int = 16) -> bytes:
    """The first bytes of a remote object, read by a range request as every read is (so a server that ignores
    ranges says so here): what a file that GDAL does not recognise as a GeoTIFF is instead."""
    lib, vsi = _libgdal(), gdal_path(path).encode()
    with remote_env():
        lib.CPLErrorReset()
        handle = lib.VSIFOpenL(vsi, b"rb")
        if not handle:
            raise remote_error(path, (lib.CPLGetLastErrorMsg() or b"does not exist").decode("utf-8", "replace"))
        try:
            buf = ctypes.create_string_buffer(size)
            got = lib.VSIFReadL(buf, 1, size, handle)
            message = (lib.CPLGetLastErrorMsg() or b"").decode("utf-8", "replace")
        finally:
            lib.VSIFCloseL(handle)
    if got < size and message:
        raise remote_error(path, message)
    return buf.raw[:got]
