"""Benchmarks that print JSON: end-to-end inference against the model-only bound, measured in one run.

Figures are ratios taken in the same process (efficiency = model-only seconds / end-to-end seconds), because
shared machines are noisy; peak RSS comes from the kernel's high-water mark for this process.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from geoseg.baseline import loop_model_only, plain_loop
from geoseg.errors import GeosegError
from geoseg.infer import InferSummary, infer
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


def model_only_seconds(config: InferConfig, n_tiles: int, workers: int, want_probs: bool = True) -> float:
    """Time the model alone on ``n_tiles`` tiles, batched and spread over ``workers`` threads like ``infer``.

    Through the same feed as the block tasks (raw tiles up, cores back), every result dropped as it comes: each
    thread holds one batch in flight, so memory depends on tile and batch size, not on the scene."""
    bundle = str(resolve_bundle(config.model).resolve())
    meta = read_meta(bundle)
    tile, halo = config.tile or meta.tile, meta.halo if config.halo is None else config.halo
    pred = get_predictor(bundle, config.device, config.runtime, tile, config.precision)
    batch_size = config.batch_size or default_batch_size(pred.device)
    raw = np.random.default_rng(0).integers(0, 256, (batch_size, meta.n_bands, tile, tile), dtype=np.uint8)
    scale = meta.scale_for(raw.dtype)

    def run(n_batches: int) -> None:
        batches = ((list(raw), None) for _ in range(n_batches))
        for _ in pred.feed(batches, scale=scale, halo=halo, batch_size=batch_size, want_probs=want_probs):
            pass

    run(1)  # warm-up, as infer's first block also pays it
    n_batches = -(-n_tiles // batch_size)
    shares = [n_batches // workers + (i < n_batches % workers) for i in range(workers)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, shares))
    return time.perf_counter() - start


def _warm_worker() -> None:
    """Imports are start-up, not the run."""
    importlib.import_module("geoseg.infer")


def worker_cpu_parts(dask_worker: Any) -> dict[str, float]:
    """On a worker: its process CPU so far, split by thread (``task_threads``: the threads that run tasks;
    ``event_loop``: distributed's own loop, with heartbeats and housekeeping; ``other_threads``: native ones,
    GDAL's compression threads, say; Linux only, else the process total alone) and, among the task threads'
    CPU, each task kind's (distributed's own per-task thread-CPU digests, ``task:NAME``)."""
    import threading

    out = {"process": time.process_time()}
    task_tids = {t.native_id for t in threading.enumerate() if t.name.startswith("Dask-")}
    loop_tid = threading.main_thread().native_id
    if os.path.isdir("/proc/self/task"):
        tick, split = os.sysconf("SC_CLK_TCK"), {"task_threads": 0.0, "event_loop": 0.0, "other_threads": 0.0}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:  # a thread that ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            kind = ("task_threads" if int(tid) in task_tids else "event_loop" if int(tid) == loop_tid
                    else "other_threads")
            split[kind] += (int(fields[11]) + int(fields[12])) / tick
        out.update(split)
    for key, value in getattr(dask_worker, "digests_total", {}).items():
        if isinstance(key, tuple) and key[0] == "execute" and "thread-cpu" in key:
            out[f"task:{key[-3]}"] = out.get(f"task:{key[-3]}", 0.0) + float(value)
    return out


@contextmanager
def bench_client(scheduler: str, workers: int) -> Iterator[tuple[Any, Callable[[], dict[str, float]] | None]]:
    """For ``processes``: a scheduler and ``workers`` single-thread workers, each in its own process (see
    :func:`subprocess_cluster`), started (and the workers warmed) before the timed run, and a reader of the
    workers' CPU summed over them (:func:`worker_cpu_parts`); for other schedulers, none (``infer`` starts its
    own)."""
    if scheduler != "processes":
        yield None, None
        return
    with subprocess_cluster(workers) as client:
        client.run(_warm_worker)

        def worker_cpu() -> dict[str, float]:
            total: dict[str, float] = {}
            for parts in client.run(worker_cpu_parts).values():
                for k, v in parts.items():
                    total[k] = total.get(k, 0.0) + v
            return total

        yield client, worker_cpu


@contextmanager
def subprocess_cluster(workers: int) -> Iterator[Any]:
    """A client of real ``dask scheduler`` and ``dask worker`` processes on loopback (no nanny), so this
    process's CPU is the driver's alone: the in-process scheduler of a ``LocalCluster`` would be counted with
    it. The workers get the lean settings, malloc policy and start-up step of the clusters :mod:`geoseg.engine`
    starts."""
    from distributed import Client

    from geoseg.allocator import worker_environ
    from geoseg.engine import configure_workers, lean_environ

    env = {**os.environ, **worker_environ(), **lean_environ()}  # as the README tells cluster users to start workers
    with tempfile.TemporaryDirectory() as tmp:
        address_file = str(Path(tmp) / "scheduler.json")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                                   address_file], **quiet)]  # type: ignore[call-overload]
        try:
            procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                        address_file, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                                        "--no-dashboard", *(["--resources", "GPU=1"] if _cuda() else [])],
                                       **quiet)  # type: ignore[call-overload]
                      for _ in range(workers)]
            with Client(scheduler_file=address_file, timeout="120s", set_as_default=False) as client:
                client.wait_for_workers(workers, timeout=600)
                configure_workers(client)
                yield client
        finally:  # the workers hold nothing to save: killed at once (a graceful close can wait on its tasks)
            for proc in reversed(procs):
                proc.kill() if proc is not procs[0] else proc.terminate()
            for proc in procs:
                proc.wait()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def project_mpx_per_s(driver_cpu_s_per_mpx: float | None, worker_nonmodel_cpu_s_per_mpx: float | None,
                      model_mpx_s: float | None, cores: int) -> dict[str, Any]:
    """Mpx/s a machine with ``cores`` cores could sustain: the slowest of the serial stage (the driver, one
    process: ``1 / driver_cpu_s_per_mpx``), the parallel CPU stages (``cores / worker_nonmodel_cpu_s_per_mpx``)
    and the model (``model_mpx_s``). A stage measured at no cost (or not measured) bounds nothing."""
    terms = {"serial_mpx_s": 1 / driver_cpu_s_per_mpx if driver_cpu_s_per_mpx and driver_cpu_s_per_mpx > 0 else None,
             "parallel_mpx_s": (cores / worker_nonmodel_cpu_s_per_mpx
                                if worker_nonmodel_cpu_s_per_mpx and worker_nonmodel_cpu_s_per_mpx > 0 else None),
             "model_mpx_s": model_mpx_s or None}
    bounds = {k: v for k, v in terms.items() if v is not None}
    limit = min(bounds, key=lambda k: bounds[k]) if bounds else None
    return {"cores": cores, **{k: None if v is None else float(f"{v:.4g}") for k, v in terms.items()},
            "limited_by": limit, "projected_mpx_per_s": float(f"{bounds[limit]:.4g}") if limit else None}


def cpu_split(summary: InferSummary, driver_cpu_s: float, worker_cpu: dict[str, float] | None) -> dict[str, Any]:
    """Driver CPU and the workers' non-model CPU, per Mpx. The model is the block stages ``load`` and
    ``predict`` (on CPU the latter includes the feed's normalise, argmax and core copies). ``worker_cpu``: the
    workers' CPU over the run, summed (:func:`worker_cpu_parts`), whose parts are reported too."""
    mpx = summary.megapixels
    driver = getattr(summary, "driver_cpu_s", None) or driver_cpu_s  # infer's own figure where it has one
    out: dict[str, Any] = {"driver_cpu_s": round(driver, 3), "driver_cpu_s_per_mpx": round(driver / mpx, 4)}
    if worker_cpu is None:
        return {**out, "worker_cpu_s": None, "worker_nonmodel_cpu_s_per_mpx": None,
                "cpu_split": "worker CPU needs --scheduler processes; the driver figure includes the worker threads"}
    worker_cpu_s = worker_cpu["process"]
    model = sum(summary.stage_cpu_seconds.get(k, 0.0) for k in ("load", "predict"))
    block_rest = sum(v for k, v in summary.stage_cpu_seconds.items() if k in ("read", "stitch", "vectorize", "write"))
    parts = {k: round(v, 3) for k, v in worker_cpu.items() if k != "process"}
    carried = summary.stage_cpu_seconds.get("reduce", 0.0)  # reductions that block tasks carried (infer.run_block)
    if "task:run_block" in worker_cpu:  # the task threads' CPU outside any block stage (task set-up, results)
        parts["task:run_block:carried_reduce"] = round(carried, 3)
        parts["task:run_block:outside_stages"] = round(worker_cpu["task:run_block"] - model - block_rest - carried, 3)
    return {**out, "worker_cpu_s": round(worker_cpu_s, 3), "worker_model_cpu_s": round(model, 3),
            "worker_nonmodel_cpu_s": round(worker_cpu_s - model, 3),
            "worker_nonmodel_cpu_s_per_mpx": round((worker_cpu_s - model) / mpx, 4),
            "worker_block_nonmodel_cpu_s": round(block_rest, 3), "worker_cpu_parts_s": parts,
            "cpu_split": "process CPU over the run of the driver (this process: planning, tracking, renames) and of "
                         "the worker processes; the scheduler runs in a process of its own, counted in neither"}


def marginal_split(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Driver and worker non-model CPU per Mpx *between* two bench runs: the CPU the larger scene adds over the
    smaller, per Mpx it adds, so a run's fixed costs (start-up, first-block imports) do not count."""
    dmpx = large["megapixels"] - small["megapixels"]
    if dmpx <= 0 or large.get("worker_cpu_s") is None or small.get("worker_cpu_s") is None:
        raise GeosegError("bench infer --marginal-from: needs --scheduler processes and a smaller size than --size")

    def per_mpx(key: str) -> float:
        return round((large[key] - small[key]) / dmpx, 4)

    return {"from_size": small["size"], "to_size": large["size"], "megapixels_added": round(dmpx, 4),
            "marginal_driver_cpu_s_per_mpx": per_mpx("driver_cpu_s"),
            "marginal_worker_nonmodel_cpu_s_per_mpx": per_mpx("worker_nonmodel_cpu_s"),
            "marginal_worker_block_nonmodel_cpu_s_per_mpx": per_mpx("worker_block_nonmodel_cpu_s"),
            "marginal_worker_cpu_parts_s_per_mpx": {
                k: round((v - small["worker_cpu_parts_s"].get(k, 0.0)) / dmpx, 4)
                for k, v in large["worker_cpu_parts_s"].items()}}


def bench_infer(size: int, config: InferConfig, folder: Path | None = None, vectors: bool = True,
                model_only: bool = True, baseline: bool = False, project_cores: int = 16,
                project_model_mpx_s: float | None = None, classes_out: Path | None = None) -> dict[str, Any]:
    """End-to-end ``infer`` on a synthetic ``size``² scene, then the model-only bound for the same tiles; with
    ``baseline``, then the plain windowed loop and its own bound (:mod:`geoseg.baseline`). With the
    ``processes`` scheduler the cluster is started before the timed run, and the CPU split and the projection
    to ``project_cores`` cores come with it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        scene = bench_scene(size, folder)
        workers = config.workers or cpu_count()
        out = Path(tmp) / "out.gpkg"
        with bench_client(config.scheduler, workers) as (client, worker_cpu):
            w0 = worker_cpu() if worker_cpu else {}
            cpu0, driver0 = cpu_seconds(), time.process_time()
            summary = infer(scene, out if vectors else None, config,
                            raster_out=classes_out or Path(tmp) / "classes.tif", overwrite=True, client=client)
            cpu1, driver_s = cpu_seconds(), time.process_time() - driver0
            worker_s = ({k: v - w0.get(k, 0.0) for k, v in worker_cpu().items()} if worker_cpu else None)
        rss = peak_rss_mb()
        model_s = model_only_seconds(config, summary.tiles_run, workers, vectors) if model_only else None
        cpu2 = cpu_seconds()
        loop = baseline_loop(scene, Path(tmp) / "loop.tif", config, workers, summary.megapixels) if baseline else None
    split = cpu_split(summary, driver_s, worker_s)
    model_rate = project_model_mpx_s or (summary.megapixels / model_s if model_s else None)
    projection = project_mpx_per_s(split["driver_cpu_s_per_mpx"], split["worker_nonmodel_cpu_s_per_mpx"],
                                   model_rate, project_cores) if worker_s is not None else None
    if projection:
        projection["model_rate"] = "given" if project_model_mpx_s else "measured (model-only bound, this machine)"
    # CPU seconds do not depend on what else the (shared) machine runs: their ratio shows the pipeline's own
    # overhead over the model even when wall times are noisy (with processes: this process's CPU only)
    e2e_cpu, model_cpu = sum(cpu1) - sum(cpu0), sum(cpu2) - sum(cpu1)
    return {
        "bench": "infer", "size": size, "megapixels": round(summary.megapixels, 4),
        "scheduler": config.scheduler, "workers": workers, "block_size": config.block_size,
        "batch_size": config.batch_size or "auto", "device": config.device, "tiles": summary.tiles_run,
        "runtime": config.runtime, "ran": ran_runtime(config, summary.tiles_run), "precision": config.precision,
        "cpu_s_per_mpx": round(e2e_cpu / summary.megapixels, 3),
        "wall_s": round(summary.seconds, 2), "mpx_per_s": round(summary.mpx_per_s, 3),
        "model_only_s": round(model_s, 3) if model_s else None,
        "efficiency": round(model_s / summary.seconds, 3) if model_s else None,
        "cpu_s": round(e2e_cpu, 1), "sys_s": round(cpu1[1] - cpu0[1], 1),
        "model_only_cpu_s": round(model_cpu, 1) if model_s else None,
        "cpu_efficiency": round(model_cpu / e2e_cpu, 3) if model_s and worker_s is None else None,
        **split, "projected_mpx_per_s": projection["projected_mpx_per_s"] if projection else None,
        "projection": projection,
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
    keys = ("wall_s", "mpx_per_s", "model_only_s", "efficiency", "cpu_efficiency", "peak_rss_mb",
            "driver_cpu_s_per_mpx", "worker_nonmodel_cpu_s_per_mpx", "projected_mpx_per_s")

    def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys if all(r.get(k) for r in rows)}

    out = {"bench": "infer", "runs": len(reports), "median": medians(reports), "reports": reports}
    if all("baseline" in r for r in reports):
        out["median_baseline"] = medians([r["baseline"] for r in reports])
    return out
