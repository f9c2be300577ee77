"""Batch jobs: many scenes into one output folder on a Dask cluster, resumable and fault-tolerant.

``inputs`` (what to run), ``fingerprint`` (what "the same" means), ``manifest`` (SQLite run record),
``cluster`` (where to run), ``runner`` (the run itself), ``bench`` (scenes/hour).
"""

from typing import Any

__all__ = ["BatchOptions", "BatchSummary", "ClusterSpec", "MANIFEST_NAME", "Manifest", "SceneRef", "list_scenes",
           "run_batch"]
# where each name lives: imported on first use, so ``geoseg batch`` checks its arguments before Dask is imported
_HOME = {"ClusterSpec": "cluster", "SceneRef": "inputs", "list_scenes": "inputs", "MANIFEST_NAME": "manifest",
         "Manifest": "manifest", "BatchOptions": "runner", "BatchSummary": "runner", "run_batch": "runner"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"geoseg.batch.{_HOME[name]}"), name)
    raise AttributeError(f"module 'geoseg.batch' has no attribute {name!r}")
