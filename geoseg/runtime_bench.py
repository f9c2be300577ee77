"""Benchmarks of the model runtimes (``--runtime``), printed as JSON by ``geoseg bench``.

- :func:`bench_runtimes`: tiles/s of each runtime on one model: one thread, one caller with every thread, and
  one caller per core with one thread each (how ``infer`` runs its Dask threads).
- :func:`compare_runtimes`: ``geoseg bench infer`` for several runtimes, alternating run by run in fresh
  processes, so that a shared machine's drift hits every runtime alike; paired ratios and CPU s per Mpx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from geoseg.errors import GeosegError
from geoseg.models.bundle import Bundle, BundleMeta, ClassInfo
from geoseg.runtime import GraphPredictor, check_runtime, compare

# bench-only variants besides the runtimes: what else is cheap to try (reported, never used by infer)
VARIANTS = ("torch-bf16", "torch-compile")


def _rate(fn: Callable[[], Any], tiles: int, min_s: float, repeat: int) -> float:
    """Tiles per second: median of ``repeat`` timed calls after one warm-up (at least ``min_s`` in all)."""
    fn()
    times: list[float] = []
    while len(times) < repeat or sum(times) < min_s:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return tiles / sorted(times)[len(times) // 2]


def _torch_runner(bundle: Bundle, variant: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    from geoseg.models.onnx_export import Probabilities

    module: Any = Probabilities(bundle).eval()
    if variant == "torch-compile":
        module = torch.compile(module)
    bf16 = variant == "torch-bf16"

    def run(x: np.ndarray) -> np.ndarray:
        torch.set_num_threads(threads)  # per calling thread (OpenMP), as the torch predictor does
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(torch.from_numpy(x))
        parts = out if isinstance(out, tuple) else (out,)
        return np.concatenate([p.float().numpy() for p in parts], axis=1)

    return run


def _runner(name: str, bundle: Bundle, graph: Path | None, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if name == "torch" or name in VARIANTS:
        return _torch_runner(bundle, name, threads)
    runtime, _, precision = name.partition("-")
    assert graph is not None
    pred = GraphPredictor(bundle, torch.device("cpu"), runtime, graph, precision or "fp32", threads)
    return lambda x: pred.predict(x, len(x))


def bench_runtimes(bundle: Bundle, graph: Path | None, runtimes: list[str], cores: int, repeat: int = 3,
                   min_s: float = 2.0) -> list[dict[str, Any]]:
    """One row per runtime: tiles/s at 1 thread, 1 caller x ``cores`` threads, ``cores`` callers x 1 thread,
    and how far its probabilities and classes are from eager torch on the same (seeded) tile."""
    meta, tile = bundle.meta, _graph_tile(graph, bundle)
    x = np.random.default_rng(19).standard_normal((1, meta.n_bands, tile, tile)).astype(np.float32)
    ref = _torch_runner(bundle, "torch", 1)(x)
    rows = []
    for name in runtimes:
        start = time.perf_counter()
        try:
            one = _runner(name, bundle, graph, 1)
            row: dict[str, Any] = {"runtime": name, **compare(one(x), ref, len(meta.classes)),
                                   "setup_s": round(time.perf_counter() - start, 2)}
            row["tiles_per_s_1_thread"] = round(_rate(lambda: one(x), 1, min_s, repeat), 3)
            if cores > 1:
                many = _runner(name, bundle, graph, cores)
                row[f"tiles_per_s_{cores}_threads"] = round(_rate(lambda: many(x), 1, min_s, repeat), 3)
                row[f"tiles_per_s_{cores}_callers"] = round(_parallel_rate(name, bundle, graph, x, cores, min_s), 3)
        except Exception as err:  # noqa: BLE001 - a runtime that cannot run a model is a row, not a crash
            row = {"runtime": name, "error": str(err).splitlines()[0] if str(err) else type(err).__name__}
        rows.append(row)
    return rows


def _parallel_rate(name: str, bundle: Bundle, graph: Path | None, x: np.ndarray, callers: int, min_s: float) -> float:
    """Tiles/s with ``callers`` threads each running one-thread forwards (infer's Dask threads on CPU)."""
    runners = [_runner(name, bundle, graph, 1) for _ in range(callers)]
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda r: r(x), runners))  # warm-up, one each
        done, start = 0, time.perf_counter()
        while done < 2 * callers or time.perf_counter() - start < min_s:
            list(pool.map(lambda r: r(x), runners))
            done += callers
        return done / (time.perf_counter() - start)


def _graph_tile(graph: Path | None, bundle: Bundle) -> int:
    if graph is None:
        return bundle.meta.tile
    import onnx

    dims = onnx.load(str(graph), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value)


def arch_bundle(arch: str, args: dict[str, Any], bands: int, classes: int, tile: int) -> Bundle:
    """An untrained model of a named architecture wrapped as a bundle (speed does not depend on weights)."""
    from geoseg.models.cost import model_heads
    from geoseg.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(arch, in_channels=bands, classes=classes, **args).eval()
    names = tuple(ClassInfo(f"c{i}") for i in range(classes))
    meta = BundleMeta(arch=arch, arch_args=args, classes=names, band_names=tuple(f"b{i}" for i in range(bands)),
                      band_indexes=tuple(range(1, bands + 1)), mean=(0.5,) * bands, std=(0.25,) * bands, tile=tile,
                      heads=model_heads(model))
    return Bundle(meta, model, None)


def bench_model_runtimes(names: list[str], runtimes: list[str], tile: int | None, bands: int, classes: int,
                         repeat: int, cores: int) -> dict[str, Any]:
    """``geoseg bench model --runtime ...``: the bundled model (``default`` or a bundle path) and architectures
    by name, each exported once (bundles: into the graph cache; architectures: into a temporary folder)."""
    from geoseg.graph_cache import cached_graph
    from geoseg.models.bench import DEFAULT_MODELS
    from geoseg.models.bundle import load_bundle, resolve_bundle
    from geoseg.models.onnx_export import export_onnx

    for name in runtimes:
        runtime, _, precision = name.partition("-")
        if name not in VARIANTS:
            check_runtime(runtime, precision or "fp32")
    graphs_needed = any(r not in VARIANTS and r != "torch" for r in runtimes)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in DEFAULT_MODELS or ":" in name or name == "resunet-a":
                arch, args = DEFAULT_MODELS.get(name, (name, {}))
                bundle = arch_bundle(arch, args, bands, classes, tile or 512)
                graph = export_onnx(bundle, Path(tmp) / f"{len(out)}.onnx") if graphs_needed else None
            else:
                bundle = load_bundle(resolve_bundle(name))
                graph = cached_graph(bundle.path or name, tile or bundle.meta.tile) if graphs_needed else None
            t = _graph_tile(graph, bundle) if graph else (tile or bundle.meta.tile)
            out.append({"model": name, "arch": bundle.meta.arch, "tile": t,
                        "runtimes": bench_runtimes(bundle, graph, runtimes, cores, repeat)})
    return {"bench": "model-runtimes", "bands": bands, "batch": 1, "cores": cores,
            "load_avg_1m": round(os.getloadavg()[0], 2), "models": out}


def compare_runtimes(args: list[str], runtimes: list[str], rounds: int) -> dict[str, Any]:
    """``geoseg bench infer ARGS --runtime R`` for each R, alternating, ``rounds`` times; medians and paired
    ratios against the first runtime, and how many class pixels agree with the first runtime's raster."""
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name in runtimes[1:]:  # graph export and checks happen here, not inside a timed run
            _child([*_small(args), "--runtime", name, "--no-model-only", "--no-vectors"])
        reports: dict[str, list[dict[str, Any]]] = {r: [] for r in runtimes}
        for i in range(rounds):
            for name in runtimes:
                keep = ["--classes-out", str(Path(tmp) / f"{name}.tif")] if i == 0 else []
                reports[name].append(_child([*args, "--runtime", name, *keep]))
        agreement = {r: _agreement(Path(tmp) / f"{runtimes[0]}.tif", Path(tmp) / f"{r}.tif") for r in runtimes[1:]}
    keys = ("mpx_per_s", "wall_s", "cpu_s_per_mpx", "model_only_s", "efficiency")
    first = reports[runtimes[0]]
    summary = {}
    for name, rows in reports.items():
        med: dict[str, Any] = {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys
                               if all(r.get(k) for r in rows)}
        med["ran"] = rows[0].get("ran")
        if name != runtimes[0]:
            med["speedup_mpx_per_s"] = round(float(np.median([r["mpx_per_s"] / f["mpx_per_s"]
                                                              for r, f in zip(rows, first)])), 3)
            med["cpu_per_mpx_ratio"] = round(float(np.median([f["cpu_s_per_mpx"] / r["cpu_s_per_mpx"]
                                                              for r, f in zip(rows, first)])), 3)
            med["class_agreement_vs_first"] = agreement[name]
        summary[name] = med
    return {"bench": "infer-runtimes", "rounds": rounds, "order": "alternating, fresh process per run",
            "load_avg_1m_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
            "cores": os.cpu_count(), "median": summary, "reports": reports}


def _small(args: list[str]) -> list[str]:
    out = list(args)
    out[out.index("--size") + 1] = "256"
    return out


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "geoseg", "bench", "infer", *args], capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise GeosegError(lines[-1].removeprefix("geoseg: error: "))
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _agreement(a: Path, b: Path) -> float:
    """Fraction of equal pixels of two class rasters on the same grid, read block by block."""
    import rasterio

    same = total = 0
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        for _, window in ra.block_windows(1):
            x, y = ra.read(1, window=window), rb.read(1, window=window)
            same += int((x == y).sum())
            total += x.size
    return round(same / total, 6) if total else 1.0
