"""Process-wide settings, applied by one explicit start-up step: importing geoseg changes nothing in the process.

:func:`configure` applies them all, once: the ``geoseg`` command calls it first thing (its click group), Dask
workers through :func:`worker_plugin`, and Python users may call it before their first run to get the command's
behaviour. Each setting is also its own idempotent function, which the code that depends on it calls on first
use, so a library caller who never configures still gets the same results.

- GDAL's block cache defaults to 5 % of RAM and fills up with the blocks of every raster written, so peak memory
  would grow with the scene (the bounded-memory invariant): a bounded cache, read by GDAL on first use.
- Model activations of a large tile are hundreds of MB, freshly mapped by every forward pass; with 4 kB pages
  the kernel spends about as much CPU faulting them in as the model computing. PyTorch's CPU allocator backs
  allocations of 2 MB and more with transparent huge pages when ``THP_MEM_ALLOC_ENABLE`` is set (read at torch's
  first allocation). The command's malloc policy (:mod:`geoseg.allocator`) keeps those buffers in the heap
  instead, where huge-page allocations would fragment it, so it turns this off again unless the user set it.
- Dask runs blocks in parallel already; OpenCV's own thread pool on top would oversubscribe the cores (and the
  model's threads). OpenCV's thread count is process-wide, and geoseg uses OpenCV only in
  :mod:`geoseg.vectorize.morph`.
- rasterio 1.4 creates the in-memory dataset for ``rasterio.features.shapes`` before giving it its transform,
  and warns that it is "not georeferenced" (also for the identity shift of the block at the scene origin) from
  whichever Dask thread runs it. Scenes without georeferencing are refused with a clear error in
  :mod:`geoseg.scene`, so these warnings never carry information; filtered process-wide, because a per-call
  ``warnings.catch_warnings`` is not thread-safe.
- A scene URL's password or signature must not reach a log: geoseg's log records and GDAL's messages as rasterio
  logs them pass through :func:`geoseg.remote.redact` (logging filters are process-wide).

Environment variables already set by the user always win.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

GDAL_CACHE_MB = "64"
ENV_DEFAULTS = {"GDAL_CACHEMAX": GDAL_CACHE_MB, "THP_MEM_ALLOC_ENABLE": "1"}
SHAPES_WARNINGS = ("Dataset has no geotransform", "The given matrix is equal to Affine.identity")

_thp_set_by_user: bool | None = None  # recorded by set_environ_defaults, before it sets its own default


def thp_set_by_user() -> bool:
    """Whether the user chose ``THP_MEM_ALLOC_ENABLE`` themselves (then geoseg leaves it alone)."""
    return _thp_set_by_user if _thp_set_by_user is not None else "THP_MEM_ALLOC_ENABLE" in os.environ


@functools.cache
def set_environ_defaults() -> None:
    """GDAL's bounded block cache and torch's huge-page allocations, unless the user set them."""
    global _thp_set_by_user
    _thp_set_by_user = "THP_MEM_ALLOC_ENABLE" in os.environ
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


@functools.cache
def single_threaded_opencv() -> None:
    """One OpenCV thread per calling thread: Dask's threads are the parallelism."""
    import cv2

    cv2.setNumThreads(1)


@functools.cache
def quiet_shapes_warnings() -> None:
    """Drop rasterio's "not georeferenced" warnings about ``features.shapes``'s own in-memory dataset."""
    from rasterio.errors import NotGeoreferencedWarning

    for message in SHAPES_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=NotGeoreferencedWarning)


@functools.cache
def configure() -> None:
    """Apply every process-wide setting (once per process)."""
    set_environ_defaults()
    single_threaded_opencv()
    quiet_shapes_warnings()
    from geoseg.remote import redact_logs

    redact_logs()


def worker_plugin() -> Any:
    """A Dask worker plugin that runs :func:`configure` in every worker (``client.register_plugin(...)``) and
    trims distributed's housekeeping there (:func:`geoseg.engine.lean_worker`; ``GEOSEG_LEAN_WORKER=0`` on a
    worker keeps distributed's own settings): workers of a remote cluster get the same settings as local ones."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class Configure(WorkerPlugin):
        name = "geoseg-configure"

        def setup(self, worker: Any) -> None:
            configure()
            if os.environ.get("GEOSEG_LEAN_WORKER", "1") != "0":
                from geoseg.engine import lean_worker

                lean_worker(worker)

    return Configure()
