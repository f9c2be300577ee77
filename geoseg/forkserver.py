"""Local worker processes forked from one server that has already imported torch and the model code.

Each spawned worker would import torch, segmentation-models-pytorch, timm and torchvision itself (several CPU
seconds, and hundreds of MB of pages faulted in one by one; two workers faulting side by side are slower still).
With the ``forkserver`` start method the server imports them once, and every worker of the run, and of any later
local cluster of this process, starts as a fork of it, sharing those pages. The server is a fresh interpreter
(nothing of the driver is inherited), started with the worker environment of :func:`geoseg.allocator.worker_environ`
(distributed sets ``pre-spawn-environ`` in this process just before the first worker starts). It imports modules
only: no thread, no CUDA context, no OpenMP pool exists before the fork. The server lives as long as this
process, so later local clusters' workers keep the environment of the first one's start.
"""

from __future__ import annotations

import multiprocessing
import sys

# what a worker's first block task imports; ``distributed`` first, as distributed's own forkserver preload does
PRELOAD = ("distributed", "numpy", "rasterio", "torch", "segmentation_models_pytorch", "geoseg.predict",
           "geoseg.infer")
CONFIG = {"distributed.worker.multiprocessing-method": "forkserver"}


def available() -> bool:
    """The forkserver start method exists on Linux and macOS, not on Windows (workers are spawned there)."""
    return sys.platform != "win32" and "forkserver" in multiprocessing.get_all_start_methods()


def set_preload() -> None:
    """Name the server's imports; call under :data:`CONFIG`, before the first worker starts."""
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # distributed names its own preload list on first use: ours replaces it
    ctx.set_forkserver_preload(list(PRELOAD))  # type: ignore[attr-defined]
