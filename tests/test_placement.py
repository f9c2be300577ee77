"""Which Dask resources each task kind asks for, checked on a real scheduler with a GPU-marked and a plain
worker (a ``GPU`` resource is only a label to Dask, so no GPU is needed to check where tasks land)."""

from __future__ import annotations

import threading

import pytest
from distributed import Client, Scheduler, SpecCluster, Worker, get_worker

from geoseg.engine import task_resources
from geoseg.placement import FEEDS_PER_GPU, TASK_KINDS, gpu_workers, needs_gpu, resources_for

BLOCKS_TOGETHER = threading.Barrier(2, timeout=600)  # generous net: passes as soon as both tasks run at once
CPU_TOGETHER = threading.Barrier(3, timeout=600)


def block_task(_: int) -> str:
    BLOCKS_TOGETHER.wait()
    return get_worker().name


def cpu_task(_: int) -> str:
    CPU_TOGETHER.wait()
    return get_worker().name


@pytest.fixture
def mixed_client():
    workers = {"gpu": {"cls": Worker, "options": {"nthreads": 2, "resources": {"GPU": 1}}},
               "cpu": {"cls": Worker, "options": {"nthreads": 1}}}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


def test_resources_per_task_kind(mixed_client) -> None:
    gpus = gpu_workers(mixed_client)
    assert list(gpus.values()) == [(1.0, 2)]
    assert resources_for("block", "auto", gpus) == {"GPU": 0.5}  # every thread of the GPU worker
    assert task_resources(mixed_client, "auto") == {"GPU": 0.5}
    assert resources_for("predict", "cuda", gpus) == {"GPU": 1 / FEEDS_PER_GPU}
    assert all(resources_for(k, "auto", gpus) is None for k in TASK_KINDS if not needs_gpu(k))
    assert resources_for("block", "cpu", gpus) is None and resources_for("block", "auto", {}) is None
    with pytest.raises(ValueError, match="unknown task kind 'tile'.*block"):
        needs_gpu("tile")

    blocks = mixed_client.map(block_task, range(2), resources=resources_for("block", "auto", gpus), pure=False)
    assert mixed_client.gather(blocks) == ["gpu", "gpu"]  # both at once, both on the GPU worker
    cpu = mixed_client.map(cpu_task, range(3), resources=resources_for("vectorize", "auto", gpus), pure=False)
    assert sorted(mixed_client.gather(cpu)) == ["cpu", "gpu", "gpu"]  # CPU work on every thread of the cluster
