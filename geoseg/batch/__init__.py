"""Batch jobs: many scenes into one output folder on a Dask cluster, resumable and fault-tolerant.

``inputs`` (what to run), ``fingerprint`` (what "the same" means), ``manifest`` (SQLite run record),
``cluster`` (where to run), ``runner`` (the run itself), ``bench`` (scenes/hour).
"""

from geoseg.batch.cluster import ClusterSpec
from geoseg.batch.inputs import SceneRef, list_scenes
from geoseg.batch.manifest import MANIFEST_NAME, Manifest
from geoseg.batch.runner import BatchOptions, BatchSummary, run_batch

__all__ = ["BatchOptions", "BatchSummary", "ClusterSpec", "MANIFEST_NAME", "Manifest", "SceneRef", "list_scenes",
           "run_batch"]
