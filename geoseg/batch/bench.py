"""``geoseg bench batch``: scenes per hour with 1 and with 2 local worker processes, measured in one run.

The same synthetic scenes go through ``run_batch`` into fresh output folders, on a local process cluster
(``--cluster local``) with 1 and then 2 workers (with ``repeat`` > 1 the order alternates, 1 2 / 2 1 / ..., so
a change in the machine's load hits both sides); wall time includes starting the cluster, as an operator's run
would, but not the workers' forkserver, which a batch starts once; ``processing`` figures run from the first
scene's start to the last scene's finish (cluster start-up excluded, model loading included). The ratio of the
two rates is the speed-up (the figures are noisy on shared machines; the ratios, taken back to back, are the
numbers to read). ``model_scaling`` then times the model alone with one and two workers
(:mod:`geoseg.batch.model_scaling`): how much the model itself slows down side by side on this machine.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from geoseg.batch.cluster import ClusterSpec
from geoseg.batch.manifest import MANIFEST_NAME
from geoseg.batch.model_scaling import model_scaling
from geoseg.batch.runner import BatchOptions, run_batch
from geoseg.pipeline import InferConfig

# a block task's stages (infer.run_block), the reductions it carries included
BLOCK_STAGES = ("reduce", "read", "load", "predict", "stitch", "vectorize", "write")
TINY = "tiny"  # --model tiny: a small untrained U-Net, so the work around the model dominates


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


def tiny_bundle(folder: Path) -> Path:
    """The cheap model: an untrained smp U-Net with a 3-level MobileNetV2-0.35 encoder (the test suite's)."""
    import torch

    from geoseg.models import BundleMeta, ClassInfo, build_model, save_bundle

    path = folder / "tiny.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        args = dict(encoder_name="tu-mobilenetv2_035", encoder_depth=3, decoder_channels=(16, 8, 8), classes=3,
                    in_channels=3)
        classes = (ClassInfo("background"), ClassInfo("building", "buildings", "#e31a1c"),
                   ClassInfo("road", "roads", "#636363"))
        meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=classes, band_names=("b1", "b2", "b3"),
                          band_indexes=(1, 2, 3), mean=(0.5,) * 3, std=(0.25,) * 3, tile=128, halo=32, stride=32)
        save_bundle(path, build_model("smp:Unet", **args), meta)
    return path


def one_run(scenes: Path, out: Path, config: InferConfig, workers: int, n_scenes: int) -> dict[str, Any]:
    load = os.getloadavg()[0]  # other processes on the machine: read the speed-up with this in mind
    start = time.perf_counter()
    before = _cpu()
    summary = run_batch(str(scenes), out, config.replace(workers=workers), BatchOptions(),
                        ClusterSpec(cluster="local", workers=workers))
    seconds = time.perf_counter() - start
    cpu = {k: round(v - before[k], 2) for k, v in _cpu().items()}
    if summary.counts["done"] != n_scenes:
        raise RuntimeError(f"bench batch: only {summary.counts['done']} of {n_scenes} scenes done: "
                           f"{[s.reason for s in summary.scenes if s.reason]}")
    with sqlite3.connect(out / MANIFEST_NAME) as db:
        first, last = db.execute("SELECT MIN(started), MAX(finished) FROM scenes WHERE run_id = ?",
                                 (summary.run_id,)).fetchone()
        stages = [json.loads(s) for s, in db.execute("SELECT stage_seconds FROM scenes WHERE run_id = ?",
                                                      (summary.run_id,))]
    span = last - first  # first scene started -> last finished: without starting the cluster
    # the workers' time in block tasks over the span they had: what is left is serial (a scene's start, its
    # reductions and assembly, the last scene's tail) or lost to other processes on the machine
    block_s = {k: round(sum(st.get(k, 0.0) for st in stages), 2) for k in BLOCK_STAGES}
    busy = sum(block_s.values()) / (workers * span)
    return {"workers": workers, "wall_s": round(seconds, 2), "scenes_per_hour": round(n_scenes / seconds * 3600, 1),
            "processing_s": round(span, 2), "scenes_per_hour_processing": round(n_scenes / span * 3600, 1),
            "mean_scene_s": round(sum(s.seconds or 0 for s in summary.scenes) / n_scenes, 2),
            "block_busy_fraction": round(busy, 3), "block_stage_s": block_s, "loadavg_1m_before": round(load, 2),
            **cpu}


def _cpu() -> dict[str, float]:
    """CPU seconds of this process: client, scheduler and scene threads (the workers are forked by the
    forkserver, see :mod:`geoseg.forkserver`, so their CPU is not this process's children's)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"driver_user_s": me.ru_utime, "driver_sys_s": me.ru_stime}


def _start_forkserver() -> None:
    """Start the workers' forkserver (its imports take seconds) before either timed run, so that neither pays
    it: a batch pays it once, however many scenes it runs."""
    from geoseg.engine import dask_client

    with dask_client("processes", 1):
        pass


def bench_batch(n_scenes: int, size: int, config: InferConfig, workers: tuple[int, int] = (1, 2),
                folder: Path | None = None, repeat: int = 1, scaling: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        name = config.model or "default"
        if config.model == TINY:
            config = config.replace(model=str(tiny_bundle(folder)))
        scenes = bench_scenes(n_scenes, size, folder)
        _start_forkserver()
        pairs = []
        for r in range(repeat):
            order = workers if r % 2 == 0 else workers[::-1]
            runs = {w: one_run(scenes, Path(tmp) / f"out_{r}_{w}", config, w, n_scenes) for w in order}
            pairs.append([runs[w] for w in workers])
        model = model_scaling(config) if scaling else None
    speedups = [b["scenes_per_hour"] / a["scenes_per_hour"] for a, b in pairs]
    steady = [b["scenes_per_hour_processing"] / a["scenes_per_hour_processing"] for a, b in pairs]
    return {"bench": "batch", "scenes": n_scenes, "size": size, "model": name, "device": config.device,
            "cluster": "local processes, 1 thread each", "cpu_cores": os.cpu_count(),
            "runs": [run for pair in pairs for run in pair],
            "speedup": round(statistics.median(speedups), 3), "speedup_processing": round(statistics.median(steady), 3),
            "speedups": [round(s, 3) for s in speedups], "speedups_processing": [round(s, 3) for s in steady],
            **({"model_scaling": model, "speedup_of_model_speedup": round(statistics.median(speedups)
                                                                           / model["model_speedup"], 3)}
               if model else {})}
