"""``geoseg bench memory``: peak RSS of a whole ``infer`` run (driver and workers) at one scene size, and in
which phase it occurs, on a scene and model cheap enough that 32768² fits in minutes of CPU.

The run is ``infer`` itself, with vectors and the class COG, on the bench scene of :mod:`geoseg.memory_scene`
(or another model's output on it): real windowed reads, the real predictor, stitching, block vectors, the
reductions of objects cut by block edges and of road cells, the COG and GeoPackage assembly. Peak RSS comes
two ways: the kernel's high-water mark of this process (``peak_rss_mb``: exact, the driver with the threads
scheduler's workers) and a sampler that sums the resident memory of this process and all its descendants
every ``interval`` seconds (``peak_tree_rss_mb``: with ``--scheduler processes`` the worker processes too),
split into phases: ``blocks`` (until the last block task is done), ``reduce_tail`` (reductions still running
after it) and ``assembly`` (the COG and GeoPackage built from the parts, and the renames).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from geoseg.memory_scene import PATTERN
from geoseg.pipeline import InferConfig

PHASES = ("blocks", "reduce_tail", "assembly")
LINEAR, TINY = "linear", "tiny"  # --model names the bench resolves itself


class TreeRss:
    """A thread that samples the summed RSS of this process and its descendants (``psutil``) until stopped."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="geoseg-rss-sampler", daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a child that ended meanwhile
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._sample()))
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self._sample()))

    def phase_peaks(self, bounds: dict[str, tuple[float, float]]) -> dict[str, dict[str, float] | None]:
        """Per phase (start, end): the first and the peak sample in MB, so a phase's own rise shows; None for a
        phase with no sample."""
        out: dict[str, dict[str, float] | None] = {}
        for name, (t0, t1) in bounds.items():
            inside = [rss for t, rss in self.samples if t0 <= t <= t1]
            out[name] = {"start_mb": round(inside[0] / 2**20, 1), "peak_mb": round(max(inside) / 2**20, 1)} \
                if inside else None
        return out


def resolve_model(model: str, folder: Path) -> str:
    """``linear`` (the bench scene's own model), ``tiny`` (the untrained U-Net of ``bench batch``), or a bundle
    path or registered name as ``infer`` takes it."""
    if model == LINEAR:
        from geoseg.memory_scene import linear_bundle

        return str(linear_bundle(folder))
    if model == TINY:
        from geoseg.batch.bench import tiny_bundle

        return str(tiny_bundle(folder))
    return model


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bench_memory(size: int, config: InferConfig, folder: Path, model: str = LINEAR, interval: float = 0.05,
                 pattern: int = PATTERN) -> dict[str, Any]:
    """One ``infer`` run on the ``size``² bench scene (made in ``folder`` once, in a child process), with vectors
    and the class COG into a temporary folder under ``folder``; peak RSS overall and per phase, CPU, objects.
    ``run_rss_mb``: the tree's peak less its RSS when the run starts (imports, libraries), the run's own share."""
    from geoseg.bench import bench_client
    from geoseg.infer import infer
    from geoseg.memory_scene import memory_scene
    from geoseg.predict import cpu_count

    folder.mkdir(parents=True, exist_ok=True)
    child0 = _cpu_s(resource.RUSAGE_CHILDREN)
    scene = memory_scene(size, folder, pattern)
    scene_cpu = _cpu_s(resource.RUSAGE_CHILDREN) - child0
    config = config.replace(model=resolve_model(model, folder))
    workers = config.workers or cpu_count()
    blocks_done: list[float] = []

    def progress(done: int, total: int) -> None:
        if done >= total and not blocks_done:
            blocks_done.append(time.perf_counter())

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=folder) as tmp, bench_client(config.scheduler, workers) as (client, wcpu):
        w0 = wcpu() if wcpu else {}
        cpu0 = _cpu_s(resource.RUSAGE_SELF)
        start = time.perf_counter()
        with TreeRss(interval) as rss:
            summary = infer(scene, Path(tmp) / "out.gpkg", config, raster_out=Path(tmp) / "classes.tif",
                            overwrite=True, progress=progress, client=client)
            end = time.perf_counter()
        cpu_self = _cpu_s(resource.RUSAGE_SELF) - cpu0
        cpu_workers = (wcpu()["process"] - w0.get("process", 0.0)) if wcpu else 0.0
        out_mb = sum(f.stat().st_size for f in Path(tmp).iterdir() if f.is_file()) / 1e6
    finalize = end - summary.stage_seconds.get("finalize", 0.0)
    last_block = blocks_done[0] if blocks_done else finalize
    phases = {"blocks": (start, last_block), "reduce_tail": (last_block, finalize), "assembly": (finalize, end)}
    mpx = summary.megapixels
    return {
        "bench": "memory", "size": size, "megapixels": round(mpx, 3), "model": model,
        "scene": f"{min(pattern, size)}² synth pattern (flat class colours, noise, darker walls), mirrored; "
                 "DEFLATE GeoTIFF",
        "scheduler": config.scheduler, "workers": workers, "device": config.device, **rss_report(rss, phases),
        "objects": summary.objects, "tiles": summary.tiles_run, "outputs_mb": round(out_mb, 1),
        "wall_s": round(end - start, 1), "phase_s": {k: round(t1 - t0, 1) for k, (t0, t1) in phases.items()},
        "cpu_s": round(cpu_self + cpu_workers, 1), "cpu_s_driver": round(cpu_self, 1),
        "cpu_s_workers": round(cpu_workers, 1) if wcpu else None,
        "cpu_s_per_mpx": round((cpu_self + cpu_workers) / mpx, 4),
        "scene_write_cpu_s": round(scene_cpu, 1), "loadavg_1m_before": round(load, 2),
        "stage_cpu_s": {k: round(v, 2) for k, v in summary.stage_cpu_seconds.items()},
    }


def rss_report(rss: TreeRss, phases: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The run's peaks: this process's high-water mark, the sampled tree's, and each phase's."""
    tree_peak, at_start = max(r for _, r in rss.samples) / 2**20, rss.samples[0][1] / 2**20
    peaks = rss.phase_peaks(phases)
    known = {k: v["peak_mb"] for k, v in peaks.items() if v is not None}
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_tree_rss_mb": round(tree_peak, 1), "rss_at_start_mb": round(at_start, 1),
            "run_rss_mb": round(tree_peak - at_start, 1), "phase_tree_rss": peaks,
            "peak_phase": max(known, key=lambda k: known[k]) if known else None,
            "rss_samples": len(rss.samples), "rss_interval_s": rss.interval}


def bench_memory_sizes(sizes: list[int], args: list[str]) -> dict[str, Any]:
    """``geoseg bench memory --child ARGS`` once per size, each in a fresh process (so each peak RSS is its own
    run's), and the largest size's peak against the smallest's."""
    runs = []
    for size in sizes:
        proc = subprocess.run([sys.executable, "-m", "geoseg", "bench", "memory", "--child", "--size", str(size),
                               *args], stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            from geoseg.errors import GeosegError

            raise GeosegError(f"bench memory: the {size}² run failed (exit status {proc.returncode}; its error "
                              "is above)")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {"bench": "memory", "sizes": sizes, "runs": runs}
    if len(runs) > 1:
        small, large = min(runs, key=lambda r: r["size"]), max(runs, key=lambda r: r["size"])
        for key in ("peak_rss_mb", "peak_tree_rss_mb"):
            out[f"{key.removesuffix('_mb')}_ratio"] = round(large[key] / small[key], 4)
        out["ratio_of"] = f"{large['size']}² over {small['size']}² (target: at most 1.10)"
    return out
