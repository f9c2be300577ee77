"""``geoseg batch`` in one process (threads scheduler): inputs, manifest, resume, failures, signals.

The real multi-process cluster cases (a killed worker, a SIGKILLed client) are in test_batch_cluster.py.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from geoseg.batch import BatchOptions, ClusterSpec, list_scenes, run_batch
from geoseg.batch.fingerprint import sha256_file
from geoseg.batch.manifest import MANIFEST_NAME
from geoseg.batch.runner import SUMMARY_NAME
from geoseg.cli import main
from geoseg.errors import ConfigError
from geoseg.pipeline import InferConfig
from tests.waiting import wait_until

SPEC = ClusterSpec(scheduler="threads", workers=2)


def tiny_config(bundle: Path, **changes: Any) -> InferConfig:
    return InferConfig(model=str(bundle), tile=128, halo=32, block_size=128, device="cpu").replace(**changes)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])


def make_archive(make_scene: Any, folder: Path, good: int = 3, size: tuple[int, int] = (300, 200)) -> dict[str, Path]:
    """``good`` scenes plus one corrupt (truncated) and one band-mismatched (4 data bands) scene."""
    folder.mkdir(exist_ok=True)
    rel = folder.name
    scenes = {f"s{i}": make_scene(f"{rel}/s{i}.tif", seed=i, width=size[0], height=size[1]) for i in range(good)}
    scenes["corrupt"] = make_scene(f"{rel}/corrupt.tif", compress="DEFLATE", width=size[0], height=size[1])
    truncate(scenes["corrupt"])
    scenes["four"] = make_scene(f"{rel}/four.tif", bands=4, photometric="MINISBLACK")
    return scenes


def rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(out_dir / MANIFEST_NAME) as db:
        db.row_factory = sqlite3.Row
        return {r["name"]: dict(r) for r in db.execute("SELECT * FROM scenes")}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp-*")]


def wait_for_done(out: Path, proc: subprocess.Popen[str] | None = None,
                  stop: threading.Event | None = None) -> set[str]:
    """Wait until the manifest (WAL: readable while the batch writes) has a done scene; return the done ones."""

    def done() -> set[str]:
        if not (out / MANIFEST_NAME).exists():
            return set()
        try:
            return {n for n, r in rows(out).items() if r["status"] == "done"}
        except sqlite3.OperationalError:  # the schema is being created
            return set()

    return wait_until(done, f"a scene done in {out}", proc=proc, stop=stop)


# --- inputs (no compute) ----------------------------------------------------------------------------------------

def test_inputs_folder_glob_text_and_stac(tmp_path: Path, make_scene: Any) -> None:
    (tmp_path / "land" / "sub").mkdir(parents=True)
    a = make_scene("land/a.tif")
    b = make_scene("land/sub/b.TIFF")
    dup = make_scene("land/sub/a.tif")  # same stem as land/a.tif
    (tmp_path / "land" / "notes.txt").write_text("not a scene")
    out = tmp_path / "land" / "results"  # outputs inside the input folder are not inputs
    out.mkdir()
    make_scene("land/results/a_classes.tif")

    refs = list_scenes(str(tmp_path / "land"), exclude=out)
    assert sorted(r.path for r in refs) == sorted(str(p) for p in (a, b, dup))
    names = {r.path: r.name for r in refs}
    assert names[str(b)] == "b"
    assert names[str(a)] != names[str(dup)] and names[str(a)].startswith("a-") and names[str(dup)].startswith("a-")
    assert list_scenes(str(tmp_path / "land"), exclude=out) == refs  # deterministic

    assert [r.path for r in list_scenes(str(tmp_path / "land" / "sub" / "*.tif"))] == [str(dup)]

    manifest = tmp_path / "land" / "list.txt"
    manifest.write_text(f"# nightly\n\nsub/b.TIFF\n{a}\n")
    assert [(r.path, r.name) for r in list_scenes(str(manifest))] == [(str(b), "b"), (str(a), "a")]

    (tmp_path / "stac" / "items").mkdir(parents=True)
    items = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "tile-1", "assets": {"visual": {"href": "../land/a.tif"}}},
        {"type": "Feature", "id": "tile-2", "assets": {"image": {"href": str(b)}, "visual": {"href": ""}}},
        {"type": "Feature", "id": "tile-3", "assets": {"thumbnail": {"href": "t.png"}}},
        {"type": "Feature", "id": "tile 4", "assets": {"visual": {"href": "https://example.com/x.tif"}}}]}
    (tmp_path / "stac" / "items.json").write_text(json.dumps(items))
    refs = list_scenes(str(tmp_path / "stac" / "items.json"))
    assert [(r.name, r.path, bool(r.problem)) for r in refs[:2]] == [("tile-1", str(a), False),
                                                                     ("tile-2", str(b), False)]
    assert "no asset visual or image" in refs[2].problem and "--asset" in refs[2].problem
    assert (refs[3].name, refs[3].path, refs[3].problem) == ("tile_4", "https://example.com/x.tif", "")  # in place
    assert list_scenes(str(tmp_path / "stac" / "items.json"), asset_keys=("thumbnail",))[2].path.endswith("t.png")

    item = {"type": "Feature", "id": "cat-item", "assets": {"image": {"href": "../../land/sub/b.TIFF"}}}
    (tmp_path / "stac" / "items" / "i.json").write_text(json.dumps(item))
    child = {"type": "Collection", "links": [{"rel": "item", "href": "items/i.json"}, {"rel": "root", "href": "x"}]}
    (tmp_path / "stac" / "collection.json").write_text(json.dumps(child))
    catalog = {"type": "Catalog", "links": [{"rel": "child", "href": "collection.json"},
                                            {"rel": "self", "href": "catalog.json"}]}
    (tmp_path / "stac" / "catalog.json").write_text(json.dumps(catalog))
    assert [(r.name, r.path) for r in list_scenes(str(tmp_path / "stac" / "catalog.json"))] == [("cat-item", str(b))]


def test_input_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such folder, file or matching glob" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    (tmp_path / "bad.json").write_text('{"type": "Nope"}')
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "bad.json"), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a STAC ItemCollection" in result.stderr


@pytest.mark.parametrize("cluster, extra", [("slurm", "geoseg[slurm]"), ("kubernetes", "geoseg[kubernetes]")])
def test_missing_cluster_extra_is_one_line(cluster: str, extra: str, tmp_path: Path, make_scene: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # None in sys.modules: "import" raises ImportError
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    result = CliRunner().invoke(main, ["batch", str(make_scene()), "--out-dir", str(tmp_path / "o"),
                                       "--cluster", cluster])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [result.stderr.strip()] and f"pip install '{extra}'" in result.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was written


# --- runs -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_resume_tamper_retry_and_changed_parameters(tmp_path: Path, make_scene: Any, tiny_bundle: Path) -> None:
    scenes = make_archive(make_scene, tmp_path / "in")
    out = tmp_path / "out"
    config = tiny_config(tiny_bundle)

    first = run_batch(str(tmp_path / "in"), out, config, BatchOptions(), SPEC)
    status = {s.name: s.status for s in first.scenes}
    assert status == {"s0": "done", "s1": "done", "s2": "done", "corrupt": "failed", "four": "failed"}
    reasons = {s.name: s.reason for s in first.scenes}
    assert str(scenes["corrupt"]) in reasons["corrupt"] and "corrupt or truncated" in reasons["corrupt"]
    assert str(scenes["four"]) in reasons["four"] and "has 4 band(s)" in reasons["four"]
    assert first.failed == 2
    m1 = rows(out)
    for name in ("s0", "s1", "s2"):
        files = {p.name for p in out.glob(f"{name}*") if p.suffix not in (".xml", ".qml")}  # class style sidecars
        assert files == {f"{name}.gpkg", f"{name}_classes.tif"}
        assert m1[name]["status"] == "done" and m1[name]["run_id"] == first.run_id
        assert json.loads(m1[name]["outputs"]) == {f: sha256_file(out / f) for f in files}
    assert m1["corrupt"]["reason"] == reasons["corrupt"]
    assert json.loads((out / SUMMARY_NAME).read_text())["counts"]["done"] == 3
    assert not temp_files(tmp_path)

    # a killed run's leftovers are removed by the next run; a rerun recomputes nothing
    (out / ".s0.gpkg.tmp-deadbeef.gpkg").write_bytes(b"half")
    (out / ".s1_classes.tif.tmp-0badf00d.stage.tif").write_bytes(b"half")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("s*")}
    second = run_batch(str(tmp_path / "in"), out, config, BatchOptions(), SPEC)
    assert {s.status for s in second.scenes} == {"skipped"} and second.failed == 0
    assert second.stale_removed == 2 and not temp_files(tmp_path)
    assert rows(out) == m1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("s*")} == mtimes

    # a changed or missing output is recomputed; the others are not
    with open(out / "s1_classes.tif", "ab") as f:
        f.write(b"\0")
    (out / "s2.gpkg").unlink()
    third = run_batch(str(tmp_path / "in"), out, config, BatchOptions(), SPEC)
    assert {s.name: s.status for s in third.scenes if s.status != "skipped"} == {"s1": "done", "s2": "done"}
    m3 = rows(out)
    assert m3["s0"] == m1["s0"] and m3["s1"]["run_id"] == third.run_id and m3["s1"]["attempts"] == 2
    # recomputed to the same class raster, byte for byte (a GeoPackage holds a write timestamp, so not that one)
    assert json.loads(m3["s1"]["outputs"])["s1_classes.tif"] == json.loads(m1["s1"]["outputs"])["s1_classes.tif"]

    # --retry-failed runs failed scenes again (and they fail again, with their reasons)
    fourth = run_batch(str(tmp_path / "in"), out, config, BatchOptions(retry_failed=True), SPEC)
    assert {s.name: s.status for s in fourth.scenes if s.status != "skipped"} == {"corrupt": "failed",
                                                                                    "four": "failed"}
    assert rows(out)["corrupt"]["attempts"] == 2 and "corrupt or truncated" in rows(out)["corrupt"]["reason"]

    # changed parameters: every good scene is computed again, with different results
    fifth = run_batch(str(tmp_path / "in"), out, tiny_config(tiny_bundle, tile=160), BatchOptions(), SPEC)
    assert {s.name: s.status for s in fifth.scenes} == {"s0": "done", "s1": "done", "s2": "done",
                                                        "corrupt": "failed", "four": "failed"}
    assert json.loads(rows(out)["s0"]["outputs"]) != json.loads(m1["s0"]["outputs"])
    # block size and workers are not parameters of the result (partition invariance): nothing to redo
    sixth = run_batch(str(tmp_path / "in"), out, tiny_config(tiny_bundle, tile=160, block_size=256), BatchOptions(),
                      ClusterSpec(scheduler="threads", workers=1))
    assert {s.status for s in sixth.scenes} == {"skipped"}

    # an option no scene can run with stops the whole run with one error, instead of failing every scene
    with pytest.raises(ConfigError, match="multiples of the model stride"):
        run_batch(str(tmp_path / "in"), out, tiny_config(tiny_bundle, halo=16), BatchOptions(), SPEC)
    statuses = {r["status"] for n, r in rows(out).items() if n.startswith("s")}
    assert "pending" in statuses and statuses <= {"pending", "done"}  # started ones pending, others untouched
    with sqlite3.connect(out / MANIFEST_NAME) as db:
        assert db.execute("SELECT status FROM runs ORDER BY started DESC LIMIT 1").fetchone() == ("config-error",)


def test_cli_stac_json_summary_and_exit_codes(tmp_path: Path, make_scene: Any, tiny_bundle: Path) -> None:
    scene = make_scene("one.tif")
    items = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "good", "assets": {"visual": {"href": "one.tif"}}},
        {"type": "Feature", "id": "gone", "assets": {"visual": {"href": "missing.tif"}}}]}
    (tmp_path / "items.json").write_text(json.dumps(items))
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "items.json"), "--out-dir", str(out), "--model", str(tiny_bundle), "--tile", "128",
            "--halo", "32", "--workers", "2", "--device", "cpu", "--json", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert {s["name"]: s["status"] for s in summary["scenes"]} == {"good": "done", "gone": "failed"}
    gone = next(s for s in summary["scenes"] if s["name"] == "gone")
    assert "missing.tif" in gone["reason"] and "cannot read" in gone["reason"]
    assert json.loads((out / SUMMARY_NAME).read_text())["run_id"] == summary["run_id"]
    assert {p.name for p in out.glob("good*")} == {"good.gpkg", "good_classes.tif", "good_classes.tif.aux.xml",
                                                   "good_classes.qml"}
    assert scene.exists()

    result = CliRunner().invoke(main, args + ["--no-fail-exit"])  # the failure is not retried: skipped
    assert result.exit_code == 0, result.output
    assert {s["status"] for s in json.loads(result.stdout)["scenes"]} == {"skipped"}

    table = CliRunner().invoke(main, args[:-2] + ["--retry-failed", "--no-fail-exit"])
    assert table.exit_code == 0
    assert "good" in table.stdout and "skipped" in table.stdout and "failed" in table.stdout


@pytest.mark.slow
def test_sigint_stops_gracefully_and_the_next_run_resumes(tmp_path: Path, make_scene: Any, tiny_bundle: Path
                                                          ) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        make_scene(f"in/s{i}.tif", seed=i, width=320, height=320)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "geoseg", "batch", str(folder), "--out-dir", str(out), "--model", str(tiny_bundle),
            "--tile", "128", "--halo", "32", "--block-size", "128", "--workers", "1", "--device", "cpu", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_done(out, proc)
        assert proc.poll() is None, "the batch finished before it could be interrupted; use more scenes"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate()  # the graceful stop's own time; pytest-timeout is the net
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["stopped_by"] == "SIGINT"
    done = {s["name"] for s in summary["scenes"] if s["status"] == "done"}
    assert done and len(done) < 4
    assert not temp_files(tmp_path)
    before = rows(out)
    assert {r["status"] for r in before.values()} <= {"done", "pending"}  # nothing left "running"
    assert {n for n, r in before.items() if r["status"] == "done"} == done
    for name in before:
        if name not in done:
            assert not list(out.glob(f"{name}*")), f"outputs of the stopped scene {name} were left"

    resumed = run_batch(str(folder), out, tiny_config(tiny_bundle, workers=1), BatchOptions(), SPEC)
    assert {s.name for s in resumed.scenes if s.status == "skipped"} == done
    assert {s.name for s in resumed.scenes if s.status == "done"} == {f"s{i}" for i in range(4)} - done
    after = rows(out)
    assert all(after[n] == before[n] for n in done)


def test_a_scene_that_kills_workers_is_quarantined_not_failed() -> None:
    """distributed raises KilledWorker once a task has taken down ``allowed-failures`` + 1 workers."""
    from distributed import KilledWorker
    from distributed.scheduler import WorkerState

    from geoseg.batch.inputs import SceneRef
    from geoseg.batch.runner import _reason
    from geoseg.errors import SceneReadError

    ref = SceneRef("/data/x.tif", "x")
    worker = WorkerState(address="tcp://127.0.0.1:9", status=None, pid=1, name="w", nthreads=1, memory_limit=0,
                         local_directory="/tmp", nanny=None, server_id="s")
    status, reason = _reason(KilledWorker("run_block-1", worker, 3), ref)
    assert status == "quarantined" and reason.startswith("/data/x.tif: ") and "--retry-failed" in reason
    assert "killed 4 Dask workers" in reason and "tcp://127.0.0.1:9" in reason
    assert len(reason.splitlines()) == 1
    assert _reason(SceneReadError("/data/x.tif: read failed"), ref) == ("failed", "/data/x.tif: read failed")
    assert _reason(MemoryError(), ref) == ("failed", "/data/x.tif: MemoryError")
