"""``geoseg batch`` on real ``dask scheduler`` / ``dask worker`` processes on loopback.

One scheduler and two single-thread workers (no nanny, so killing a worker process kills it for good). The
client is first SIGKILLed mid-run (as a real ``geoseg batch`` process); the rerun must finish without
recomputing a finished scene and leave no temporary file anywhere. Then a second batch loses one worker
mid-run; it must complete with outputs identical in content to the first batch's (class rasters pixel for
pixel; GeoPackage layers geometry for geometry and attribute for attribute: the files' bytes differ because
a GeoPackage records its write time).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geoseg.batch import BatchOptions, ClusterSpec, run_batch
from geoseg.batch.manifest import MANIFEST_NAME
from tests.test_batch import make_archive, rows, temp_files, tiny_config, wait_for_done
from tests.test_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
GOOD = [f"s{i}" for i in range(4)]  # plus a corrupt and a band-mismatched scene: 6 in all


@pytest.fixture
def two_workers(tmp_path: Path) -> Any:
    """``tcp://`` address of a scheduler with two ``--nthreads 1`` worker processes, and those processes."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", "127.0.0.1:0"], stdout=log, stderr=log)]
    workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                                stdout=log, stderr=log, cwd=ROOT) for i in range(2)]
    procs += workers
    try:
        with Client(address, timeout="1h", set_as_default=False) as client:  # pytest-timeout is the net
            client.wait_for_workers(2)
        yield address, workers
    finally:
        for p in reversed(procs):  # workers first, at once: their graceful close can wait on running tasks
            if p.poll() is None:
                p.kill() if p in workers else p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a loaded machine can be slow to shut down: do not leak it
                p.kill()
                p.wait()
        log.close()


def layers_content(path: Path) -> dict[str, list[tuple[str, tuple[Any, ...]]]]:
    """Each layer's features as (normalised WKB hex, attributes), sorted: independent of write order."""
    out = {}
    for name, geometry_type in pyogrio.list_layers(path):
        if geometry_type is None:  # the layer_styles table (QGIS styles) has no geometry
            continue
        frame = gpd.read_file(path, layer=name, engine="pyogrio")
        geoms = shapely.to_wkb(shapely.normalize(frame.geometry.values), hex=True)
        attrs = frame.drop(columns="geometry").itertuples(index=False, name=None)
        out[name] = sorted(zip(geoms, attrs))
    return out


def assert_same_outputs(a: Path, b: Path, name: str) -> None:
    with rasterio.open(a / f"{name}_classes.tif") as x, rasterio.open(b / f"{name}_classes.tif") as y:
        assert x.profile == y.profile
        np.testing.assert_array_equal(x.read(), y.read())
    assert layers_content(a / f"{name}.gpkg") == layers_content(b / f"{name}.gpkg")


@pytest.mark.slow
def test_killed_client_then_killed_worker(tmp_path: Path, make_scene: Any, tiny_bundle: Path, two_workers: Any
                                          ) -> None:
    address, workers = two_workers
    make_archive(make_scene, tmp_path / "in", good=len(GOOD), size=(256, 256))
    spec = ClusterSpec(scheduler=address, workers=2)
    config = tiny_config(tiny_bundle)

    # 1. SIGKILL the client (a real `geoseg batch` process) as soon as one scene is done
    first = tmp_path / "first"
    args = [sys.executable, "-m", "geoseg", "batch", str(tmp_path / "in"), "--out-dir", str(first), "--scheduler",
            address, "--model", str(tiny_bundle), "--tile", "128", "--halo", "32", "--block-size", "128",
            "--device", "cpu", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        wait_for_done(first, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = rows(first)
    done_before = {n for n, r in killed.items() if r["status"] == "done"}
    assert 0 < len(done_before) < len(GOOD), "the client was not killed mid-run; use more or larger scenes"
    leftovers = temp_files(first)  # what the SIGKILL left, if it hit while outputs were being written

    resumed = run_batch(str(tmp_path / "in"), first, config, BatchOptions(), spec)
    status = {s.name: s.status for s in resumed.scenes}
    assert {n for n, st in status.items() if st == "skipped"} >= done_before
    assert {n for n in GOOD if rows(first)[n]["status"] == "done"} == set(GOOD)
    after = rows(first)
    for name in done_before:  # not recomputed: same run, same finish time, one attempt
        assert after[name] == killed[name]
    for name in set(GOOD) - done_before:
        assert after[name]["run_id"] == resumed.run_id
    assert after["corrupt"]["status"] == "failed" and "corrupt or truncated" in after["corrupt"]["reason"]
    assert after["four"]["status"] == "failed" and "has 4 band(s)" in after["four"]["reason"]
    assert resumed.stale_removed == len(leftovers)
    assert not temp_files(tmp_path), "partial file left behind"
    with sqlite3.connect(first / MANIFEST_NAME) as db:
        runs = dict(db.execute("SELECT run_id, status FROM runs"))
    assert sorted(runs.values()) == ["finished", "killed"]

    # 2. kill one worker process while the second batch runs: it completes, with the same outputs
    second = tmp_path / "second"
    batch_over = threading.Event()
    done_at_kill: set[str] = set()

    def kill_a_worker() -> None:
        done_at_kill.update(wait_for_done(second, stop=batch_over))
        workers[0].kill()

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    try:
        summary = run_batch(str(tmp_path / "in"), second, config, BatchOptions(), spec)
    finally:
        batch_over.set()
        killer.join()  # it returns once it has killed, or at once when the batch ended first
    assert workers[0].poll() is not None, "the worker was not killed"
    assert 0 < len(done_at_kill) < len(GOOD), "the worker was not killed mid-run"
    assert {s.name for s in summary.scenes if s.status == "done"} == set(GOOD)
    assert {s.name: s.status for s in summary.scenes if s.name not in GOOD} == {"corrupt": "failed",
                                                                                "four": "failed"}
    assert all(s.reason for s in summary.scenes if s.status == "failed")
    for name in GOOD:
        assert_same_outputs(first, second, name)
    assert not temp_files(tmp_path)
    assert json.loads((second / "geoseg-batch-summary.json").read_text())["counts"]["done"] == len(GOOD)
