"""Benchmarks that print JSON: end-to-end inference against the model-only bound, measured in one run.

Figures are ratios taken in the same process (efficiency = model-only seconds / end-to-end seconds), because
shared machines are noisy; peak RSS comes from the kernel's high-water mark for this process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.baseline import loop_model_only, plain_loop
from geoseg.errors import GeosegError
from geoseg.infer import infer
from geoseg.models.bundle import read_meta, resolve_bundle
from geoseg.pipeline import InferConfig
from geoseg.predict import cpu_count, default_batch_size, get_predictor


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (processes scheduler), in MB."""
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def bench_scene(size: int, folder: Path) -> Path:
    """A synthetic scene of ``size``², made once in a child process so its memory is not counted here."""
    path = folder / f"bench_{size}.tif"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "geoseg", "synth", str(path), "--size", str(size), "--seed", "77"],
                       check=True)
    return path


def model_only_seconds(config: InferConfig, n_tiles: int, workers: int) -> float:
    """Time the model alone on ``n_tiles`` tiles, batched and spread over ``workers`` threads like ``infer``."""
    bundle = str(resolve_bundle(config.model).resolve())
    meta = read_meta(bundle)
    tile = config.tile or meta.tile
    pred = get_predictor(bundle, config.device, config.runtime, tile, config.precision)
    batch_size = config.batch_size or default_batch_size(pred.device)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((batch_size, meta.n_bands, tile, tile)).astype(np.float32)
    n_batches = -(-n_tiles // batch_size)
    pred.predict(batch[:1], batch_size)  # warm-up, as infer's first block also pays it
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: pred.predict(batch, batch_size), range(n_batches)))
    return time.perf_counter() - start


def bench_infer(size: int, config: InferConfig, folder: Path | None = None, vectors: bool = True,
                model_only: bool = True, baseline: bool = False, classes_out: Path | None = None) -> dict[str, Any]:
    """End-to-end ``infer`` on a synthetic ``size``² scene, then the model-only bound for the same tiles; with
    ``baseline``, then the plain windowed loop and its own bound (:mod:`geoseg.baseline`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        scene = bench_scene(size, folder)
        workers = config.workers or cpu_count()
        out = Path(tmp) / "out.gpkg"
        cpu0 = cpu_seconds()
        summary = infer(scene, out if vectors else None, config, raster_out=classes_out or Path(tmp) / "classes.tif",
                        overwrite=True)
        cpu1 = cpu_seconds()
        rss = peak_rss_mb()
        model_s = model_only_seconds(config, summary.tiles_run, workers) if model_only else None
        cpu2 = cpu_seconds()
        loop = baseline_loop(scene, Path(tmp) / "loop.tif", config, workers, summary.megapixels) if baseline else None
    # CPU seconds do not depend on what else the (shared) machine runs: their ratio shows the pipeline's own
    # overhead over the model even when wall times are noisy
    e2e_cpu, model_cpu = sum(cpu1) - sum(cpu0), sum(cpu2) - sum(cpu1)
    return {
        "bench": "infer", "size": size, "megapixels": round(summary.megapixels, 2),
        "scheduler": config.scheduler, "workers": workers, "block_size": config.block_size,
        "batch_size": config.batch_size or "auto", "device": config.device, "tiles": summary.tiles_run,
        "runtime": config.runtime, "ran": ran_runtime(config, summary.tiles_run), "precision": config.precision,
        "cpu_s_per_mpx": round(e2e_cpu / summary.megapixels, 3),
        "wall_s": round(summary.seconds, 2), "mpx_per_s": round(summary.mpx_per_s, 3),
        "model_only_s": round(model_s, 2) if model_s else None,
        "efficiency": round(model_s / summary.seconds, 3) if model_s else None,
        "cpu_s": round(e2e_cpu, 1), "sys_s": round(cpu1[1] - cpu0[1], 1),
        "model_only_cpu_s": round(model_cpu, 1) if model_s else None,
        "cpu_efficiency": round(model_cpu / e2e_cpu, 3) if model_s else None,
        "peak_rss_mb": round(rss["self"], 1), "peak_rss_children_mb": round(rss["children"], 1),
        "stage_s": {k: round(v, 2) for k, v in summary.stage_seconds.items()},
        "stage_cpu_s": {k: round(v, 2) for k, v in summary.stage_cpu_seconds.items()},
        "objects": summary.objects,
        **({"baseline": loop} if loop else {}),
    }


def ran_runtime(config: InferConfig, tiles: int) -> str:
    """The runtime that ran (what ``auto`` chose), read from this process's predictor cache."""
    if config.scheduler != "threads" or not tiles:
        return config.runtime if config.runtime != "auto" else "unknown (ran in worker processes)"
    meta = read_meta(config.model)
    pred = get_predictor(str(resolve_bundle(config.model).resolve()), config.device, config.runtime,
                         config.tile or meta.tile, config.precision)
    return str(getattr(pred, "runtime", "torch"))


def baseline_loop(scene: Path, out: Path, config: InferConfig, threads: int, megapixels: float) -> dict[str, Any]:
    """The plain windowed loop on the same scene, then its model-only bound, measured like ``infer``."""
    pred = get_predictor(str(resolve_bundle(config.model).resolve()), config.device)
    meta = pred.bundle.meta
    tile, halo = config.tile or meta.tile, meta.halo if config.halo is None else config.halo
    cpu0 = cpu_seconds()
    wall, n_tiles = plain_loop(scene, out, pred.bundle, tile, halo, threads, pred.device)
    cpu1 = cpu_seconds()
    model_s = loop_model_only(pred.bundle, tile, n_tiles, threads, pred.device)
    cpu2 = cpu_seconds()
    loop_cpu, model_cpu = sum(cpu1) - sum(cpu0), sum(cpu2) - sum(cpu1)
    return {"what": "plain windowed loop: rasterio reads, one forward per tile on all cores, GeoTIFF out",
            "tiles": n_tiles, "wall_s": round(wall, 2), "mpx_per_s": round(megapixels / wall, 3),
            "model_only_s": round(model_s, 2), "efficiency": round(model_s / wall, 3),
            "cpu_s": round(loop_cpu, 1), "model_only_cpu_s": round(model_cpu, 1),
            "cpu_efficiency": round(model_cpu / loop_cpu, 3)}


def bench_repeat(args: list[str], runs: int) -> dict[str, Any]:
    """``geoseg bench infer ARGS`` ``runs`` times, each in a fresh process (so no run inherits another's warm
    heap or loaded model); every run's report and the medians, since one run on a shared machine is noisy."""
    reports = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-m", "geoseg", "bench", "infer", *args], capture_output=True,
                              text=True)
        if proc.returncode:  # the run's own one-line error (a bad --model, say), not a traceback from here
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            raise GeosegError(lines[-1].removeprefix("geoseg: error: "))
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = ("wall_s", "mpx_per_s", "model_only_s", "efficiency", "cpu_efficiency", "peak_rss_mb")

    def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys if all(r.get(k) for r in rows)}

    out = {"bench": "infer", "runs": len(reports), "median": medians(reports), "reports": reports}
    if all("baseline" in r for r in reports):
        out["median_baseline"] = medians([r["baseline"] for r in reports])
    return out
