"""``--scheduler tcp://`` against real ``dask scheduler`` / ``dask worker`` processes on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.infer import infer
from geoseg.pipeline import InferConfig
from tests.waiting import accepts, wait_until



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", "127.0.0.1:0"], stdout=log, stderr=log)]
    wait_until(lambda: accepts(port), "the dask scheduler listening", proc=procs[0])  # else workers may give up
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
                                   "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                  stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent))
    try:
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait()  # SIGTERM: the nanny stops its worker processes first (pytest-timeout is the net)
        log.close()


@pytest.mark.slow
def test_remote_cluster_gives_the_same_outputs(make_scene, tiny_bundle, tmp_path, cluster):
    scene = make_scene(width=300, height=260)
    outs = {}
    for name, scheduler in (("local", "threads"), ("remote", cluster)):
        prob = tmp_path / f"{name}.tif"
        infer(scene, tmp_path / f"{name}.gpkg", InferConfig(model=str(tiny_bundle), scheduler=scheduler,
                                                             block_size=128, workers=2), prob_out=prob)
        with rasterio.open(prob) as src:
            outs[name] = src.read()
    np.testing.assert_array_equal(outs["remote"], outs["local"])
