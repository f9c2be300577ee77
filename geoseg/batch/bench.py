"""``geoseg bench batch``: scenes per hour with 1 and with 2 local worker processes, measured in one run.

The same synthetic scenes go through ``run_batch`` twice, into fresh output folders, on a local process
cluster (``--cluster local``) with 1 and then 2 workers; wall time includes starting the cluster, as an
operator's run would; ``processing`` figures run from the first scene's start to the last scene's finish
(cluster start-up excluded, model loading included). The ratio of the two rates is the speed-up (the
figures are noisy on shared machines; the ratio, taken in one run, is the number to read).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from geoseg.batch.cluster import ClusterSpec
from geoseg.batch.manifest import MANIFEST_NAME
from geoseg.batch.runner import BatchOptions, run_batch
from geoseg.pipeline import InferConfig


def bench_scenes(n: int, size: int, folder: Path) -> Path:
    """``n`` synthetic ``size``² scenes (seeds 500...), made once and reused."""
    from geoseg.synth import SynthSpec, write_scene

    scenes = folder / f"scenes_{size}"
    scenes.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = scenes / f"scene_{i:03d}.tif"
        if not path.exists():
            write_scene(SynthSpec(size, size, seed=500 + i), path, folder / f"truth_{size}_{i:03d}.gpkg",
                        overwrite=True)
    return scenes


def bench_batch(n_scenes: int, size: int, config: InferConfig, workers: tuple[int, ...] = (1, 2),
                folder: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        scenes = bench_scenes(n_scenes, size, folder)
        runs = {}
        for w in workers:
            load = os.getloadavg()[0]  # other processes on the machine: read the speed-up with this in mind
            start = time.perf_counter()
            summary = run_batch(str(scenes), Path(tmp) / f"out_{w}", config.replace(workers=w), BatchOptions(),
                                ClusterSpec(cluster="local", workers=w))
            seconds = time.perf_counter() - start
            if summary.counts["done"] != n_scenes:
                raise RuntimeError(f"bench batch: only {summary.counts['done']} of {n_scenes} scenes done: "
                                   f"{[s.reason for s in summary.scenes if s.reason]}")
            with sqlite3.connect(Path(tmp) / f"out_{w}" / MANIFEST_NAME) as db:
                first, last = db.execute("SELECT MIN(started), MAX(finished) FROM scenes WHERE run_id = ?",
                                         (summary.run_id,)).fetchone()
            span = last - first  # first scene started -> last finished: without starting the cluster
            runs[w] = {"wall_s": round(seconds, 2), "scenes_per_hour": round(n_scenes / seconds * 3600, 1),
                       "processing_s": round(span, 2),
                       "scenes_per_hour_processing": round(n_scenes / span * 3600, 1),
                       "mean_scene_s": round(sum(s.seconds or 0 for s in summary.scenes) / n_scenes, 2),
                       "loadavg_1m_before": round(load, 2)}
    rates = [runs[w]["scenes_per_hour"] for w in workers]
    steady = [runs[w]["scenes_per_hour_processing"] for w in workers]
    return {"bench": "batch", "scenes": n_scenes, "size": size, "model": config.model or "default",
            "device": config.device, "cluster": "local processes, 1 thread each", "cpu_cores": os.cpu_count(),
            "runs": {f"{w}_workers": r for w, r in runs.items()},
            "speedup": round(rates[-1] / rates[0], 3) if len(rates) > 1 else None,
            "speedup_processing": round(steady[-1] / steady[0], 3) if len(steady) > 1 else None}
