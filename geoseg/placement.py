"""Where a task runs: the Dask resources each kind of task asks for.

Workers that own a GPU declare a ``GPU`` resource: local clusters started by :func:`geoseg.engine.dask_client`
do it themselves, remote ones with ``dask worker --resources GPU=1`` (``workflows/``). A task that runs the
model asks for a share of that resource, so it lands only on GPU workers and no more of them run at once than
the GPU is meant to feed; every other kind asks for nothing, so it runs on any worker thread: every core.
"""

from __future__ import annotations

from typing import Any, Mapping

# kind -> what it does; the kinds in GPU_KINDS run the model
TASK_KINDS: dict[str, str] = {
    "block": "read, predict, stitch and vectorise one block (the whole block task)",
    "predict": "the model on a block's tiles: upload, normalise, forward, argmax, core crop, download",
    "read": "windowed reads of a block with its halo",
    "vectorize": "polygons and road cells of one block",
    "reduce": "join objects and road cells cut by block edges",
    "write": "write a block's raster or vector parts",
    "assemble": "build the final files from the parts",
}
GPU_KINDS = frozenset({"block", "predict"})
# concurrent predict tasks per GPU: one batch computes while the next one's tiles are staged and uploaded
FEEDS_PER_GPU = 2


def needs_gpu(kind: str) -> bool:
    """Whether tasks of ``kind`` run the model (and so want a GPU worker when there is one)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(TASK_KINDS)}")
    return kind in GPU_KINDS


def gpu_workers(client: Any) -> dict[str, tuple[float, int]]:
    """``{address: (GPU resource, threads)}`` of the cluster's workers that declare a ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return {addr: (float(w["resources"]["GPU"]), int(w.get("nthreads", 1)))
            for addr, w in workers.items() if w.get("resources", {}).get("GPU")}


def resources_for(kind: str, device: str, gpus: Mapping[str, tuple[float, int]]) -> dict[str, float] | None:
    """The ``resources=`` of a task of ``kind`` on a cluster whose GPU workers are ``gpus`` (:func:`gpu_workers`).

    None (anywhere) for CPU kinds, for ``--device cpu`` and on clusters without GPU workers. A ``block`` task
    also does CPU work, so every thread of a GPU worker may run one: its share is the smallest GPU-per-thread
    among the GPU workers. A ``predict`` task takes ``1 / FEEDS_PER_GPU`` of one GPU.
    """
    if not needs_gpu(kind) or device == "cpu" or not gpus:
        return None
    if kind == "predict":
        return {"GPU": 1.0 / FEEDS_PER_GPU}
    return {"GPU": min(amount / threads for amount, threads in gpus.values())}
