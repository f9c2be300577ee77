"""The data path on the workers: block tasks write their own parts and return only small metadata; every task
survives a retry (a worker lost after writing); a cluster whose workers do not see the output folder is refused
with one line."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geoseg.assemble import assemble_raster, assemble_vectors, run_reduce
from geoseg.tiling import block_side, make_blocks
from geoseg.infer import BlockJob, Outputs, infer, run_block, vector_spec
from geoseg.parts import load_arrays
from geoseg.pipeline import ClassPost, InferConfig
from geoseg.preflight import check_run
from tests.test_batch_cluster import layers_content
from tests.test_cluster import free_port
from tests.waiting import accepts, wait_until

KEEP_ALL = {name: ClassPost(min_area_m2=0.0) for name in ("building", "road")}  # untrained model: tiny blobs


def part_files(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    return {str(p.relative_to(folder)): load_arrays(p) for p in sorted(folder.rglob("*.arrays"))}


def test_tasks_write_their_parts_and_survive_retries(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """Every block, reduction and assembly task run by hand, each twice (as a retry after a lost worker would):
    the same parts, no temporary file, and files equal to what ``infer`` writes."""
    scene = make_scene(width=300, height=260)
    config = InferConfig(model=str(tiny_bundle), block_size=64, workers=1, post=KEEP_ALL)
    ref = tmp_path / "ref"
    ref.mkdir()
    infer(scene, ref / "o.gpkg", config, raster_out=ref / "c.tif")

    out = tmp_path / "out"
    out.mkdir()
    checked = check_run(scene, out / "o.gpkg", config, raster_out=out / "c.tif")
    vs = vector_spec(checked.scene, checked.meta, checked.class_ids, checked.layers, config,
                     block_side(64, checked.spec))
    with Outputs(checked.scene, checked.meta, vs, out / "o.gpkg", out / "c.tif", None) as sink:
        jobs = [BlockJob(checked.scene, b, checked.spec, checked.bundle, checked.meta, "cpu", 1, vs, sink.staging)
                for b in make_blocks(checked.scene.height, checked.scene.width, checked.spec, 64)]
        reductions, sent = [], 0
        for job in jobs:
            res = run_block(job)
            first = part_files(sink.staging.vectors)
            assert pickle.loads(pickle.dumps(run_block(job))).vectors.totals == res.vectors.totals
            again = part_files(sink.staging.vectors)
            assert first.keys() == again.keys()
            for name in first:
                for key in first[name]:
                    np.testing.assert_array_equal(again[name][key], first[name][key])
            sent += len(pickle.dumps(res))
            reductions += sink.add(res)
        # what travels to the driver is less than the class raster alone would be (one byte a pixel)
        assert sent < checked.scene.width * checked.scene.height, sent
        assert len(reductions) >= 2 and sink.tracker is not None and sink.tracker.pending() == 0
        assert any(r.groups for r in reductions) and any(r.cells for r in reductions)  # not vacuous
        for job in reductions:
            totals = run_reduce(job, vs, sink.staging.vectors)
            retry = run_reduce(job, vs, sink.staging.vectors)  # a retry: its output is in place, its inputs gone
            assert retry.counts == totals.counts and retry.measures == pytest.approx(totals.measures)
            sink.reduced(job, totals)
        assert not list((sink.staging.vectors / "frag").iterdir()), "inputs stay once their output is in place"
        staged = [(assemble_raster(job), out / "c.tif") for job in sink.raster_jobs()]
        args = sink.vector_args()
        assert args is not None
        assemble_vectors(*args)
        staged += assemble_vectors(*args)  # a retry of the assembly: same file, no feature twice
        assert not [p for f in sink.folders() for p in f.rglob(".*")], "a temporary part was left"
        sink.commit(staged)
    assert not list(out.glob(".*")), "a staging folder was left"
    assert layers_content(out / "o.gpkg") == layers_content(ref / "o.gpkg")
    import rasterio

    with rasterio.open(out / "c.tif") as a, rasterio.open(ref / "c.tif") as b:
        assert a.profile == b.profile
        np.testing.assert_array_equal(a.read(), b.read())


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged mount namespaces (unshare -rm)")
def test_block_tasks_carry_the_reductions(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """The driver pays per Dask task, so reductions ride on the next block task: a many-block run makes
    reduction tasks of their own only in its tail (the last blocks in flight), with the same files as a run
    whose blocks carry nothing (one block each)."""
    from distributed import Client, LocalCluster, get_task_stream

    from geoseg.infer import INFLIGHT_PER_WORKER

    scene = make_scene(width=300, height=260)
    config = InferConfig(model=str(tiny_bundle), block_size=64, workers=1, post=KEEP_ALL)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client, get_task_stream(client) as stream:
        summary = infer(scene, tmp_path / "o.gpkg", config, raster_out=tmp_path / "c.tif", client=client)
    kinds = [t["key"].split("-")[0] for t in stream.data]
    blocks, reductions = kinds.count("run_block"), kinds.count("run_reduce")
    assert blocks > 4 * INFLIGHT_PER_WORKER, blocks  # not vacuous: most blocks have a successor to carry
    assert summary.stage_cpu_seconds.get("reduce", 0.0) > 0  # reductions ran inside block tasks
    assert reductions <= 2 * INFLIGHT_PER_WORKER, kinds  # one object and one network class per tail block
    one = tmp_path / "one"
    one.mkdir()
    infer(scene, one / "o.gpkg", config.replace(block_size=512), raster_out=one / "c.tif")
    assert layers_content(tmp_path / "o.gpkg") == layers_content(one / "o.gpkg")
    assert summary.objects["buildings"] > 10, summary.objects


def test_workers_that_cannot_see_the_output_folder_are_refused(make_scene: Any, tiny_bundle: Path,
                                                               tmp_path: Path) -> None:
    """A real worker whose view of the output folder differs from the driver's: it runs in its own mount
    namespace with an empty tmpfs over that folder, as a worker on another node without the shared mount."""
    out = tmp_path / "out"
    out.mkdir()
    scene = make_scene()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "w")
    worker = f"exec {sys.executable} -m distributed.cli.dask_worker {address} --nthreads 1 --no-nanny " \
             "--host 127.0.0.1 --no-dashboard"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--dashboard-address", "127.0.0.1:0"], stdout=log, stderr=log)]
    try:
        wait_until(lambda: accepts(port), "the dask scheduler listening", proc=procs[0])
        procs.append(subprocess.Popen(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs none {out} && {worker}"],
                                      stdout=log, stderr=log))
        from distributed import Client

        with Client(address, timeout="1h", set_as_default=False) as client:  # pytest-timeout is the net
            client.wait_for_workers(1)
        run = subprocess.run([sys.executable, "-m", "geoseg", "infer", str(scene), "--out", str(out / "b.gpkg"),
                              "--model", str(tiny_bundle), "--scheduler", address, "--device", "cpu", "-q"],
                             capture_output=True, text=True, timeout=900)
    finally:
        for p in reversed(procs):
            p.kill()
        for p in procs:
            p.wait()
        log.close()
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1, run.stderr
    assert len(lines) == 1 and lines[0].startswith(f"geoseg: error: {out}: the output folder is not visible to "
                                                   "Dask worker(s) tcp://127.0.0.1:"), lines
    assert "shared filesystem" in lines[0]
    assert not list(out.iterdir()), "the refused run left its staging folder"


def test_interrupt_between_staging_folders_leaves_none(make_scene: Any, tiny_bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C landing after the first staging folder is made and before the next: every folder made goes."""
    import geoseg.infer
    from geoseg.models.bundle import read_meta
    from geoseg.scene import open_scene

    made: list[Path] = []
    real = geoseg.infer.make_staging

    def make_then_interrupt(folder: Path, subfolders: tuple[str, ...] = ()) -> Path:
        made.append(real(folder, subfolders))
        if len(made) == 2:
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(geoseg.infer, "make_staging", make_then_interrupt)
    out = tmp_path / "out"
    out.mkdir()
    scene = open_scene(make_scene())
    with pytest.raises(KeyboardInterrupt):
        with Outputs(scene, read_meta(tiny_bundle), None, None, out / "c.tif", out / "p.tif"):
            pass
    assert len(made) == 2 and all(p.parent == out for p in made)
    assert list(out.iterdir()) == []


def test_array_sets_read_back_every_dtype_and_refuse_objects(tmp_path: Path) -> None:
    from geoseg.vectorize.spill import read_arrays, write_arrays
    rng = np.random.default_rng(0)
    arrays = {"mask": rng.random((7, 5)) > 0.5, "prob": rng.random((3, 7, 5)).astype(np.float32),
              "wkb": rng.integers(0, 255, 11).astype(np.uint8), "ids": np.arange(4, dtype=np.int64),
              "names": np.array(["road", "building"]), "empty": np.zeros((0, 3), np.float64),
              "strided": np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]}
    write_arrays(tmp_path / "a.arrays", arrays)
    back = read_arrays(tmp_path / "a.arrays")
    assert list(back) == list(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape and np.array_equal(back[name], a)
    back["prob"][0, 0, 0] = 2.0  # writable, as np.load's arrays were
    with pytest.raises(TypeError, match="object"):
        write_arrays(tmp_path / "b.arrays", {"bad": np.array([b"x", None], dtype=object)})
    (tmp_path / "c.arrays").write_bytes((tmp_path / "a.arrays").read_bytes()[:-3])
    with pytest.raises(ValueError, match="not an array-set file"):
        read_arrays(tmp_path / "c.arrays")
