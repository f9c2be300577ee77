"""``geoseg batch`` over remote scenes: object stores (moto's S3 server), nginx, static STAC catalogues over HTTP,
a STAC API search; fingerprints by HEAD, resume after a kill, and no credential in any output or log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from geoseg.batch import BatchOptions, ClusterSpec, list_scenes, run_batch
from geoseg.cli import main
from geoseg.errors import ConfigError
from tests.remote_servers import StacApi, make_cog, s3, stac_item, web  # noqa: F401 (fixtures)
from tests.test_batch import rows, tiny_config, wait_for_done

SPEC = ClusterSpec(scheduler="threads", workers=2)
TINY = ["--tile", "128", "--halo", "32", "--block-size", "128", "--device", "cpu", "--workers", "2"]
SECRETS = ("geoseg-test-secret-6b1f0e", "GEOSEGTESTKEYID0001", "hunter22pass", "sigSECRET42")


def batch(*args: Any) -> Any:
    return CliRunner().invoke(main, ["batch", *map(str, args)])


def statuses(summary: Any) -> dict[str, str]:
    return {s.name: s.status for s in summary.scenes}


def leaked(folder: Path, *texts: str) -> list[str]:
    """Secrets found in any file under ``folder`` (the manifest and its WAL, outputs, summary) or in ``texts``."""
    found = [f"{p.name}: {s}" for p in folder.rglob("*") if p.is_file() for s in SECRETS if s.encode() in
             p.read_bytes()]
    return found + [f"output: {s}" for t in texts for s in SECRETS if s in t]


def test_object_store_and_signed_urls_leave_no_credentials(s3: Any, web: Any, make_scene: Any, tiny_bundle: Path,
                                                           tmp_path: Path) -> None:
    server, root = web
    a, b = make_scene("a.tif", seed=1, width=256, height=256), make_scene("b.tif", seed=2, width=256, height=256)
    s3.upload_file(str(a), "archive", "scenes/a.tif")
    s3.upload_file(str(b), "archive", "scenes/b.tif")
    make_cog(a, root / "c.tif")
    signed = f"{server.url.replace('//', '//bob:hunter22pass@')}/c.tif?X-Amz-Signature=sigSECRET42&X-Amz-Expires=60"
    manifest = tmp_path / "scenes.txt"
    manifest.write_text(f"s3://archive/scenes/a.tif\n/vsis3/archive/scenes/b.tif\n{signed}\n"
                        "s3://archive/scenes/missing.tif\n")
    out = tmp_path / "out"
    result = batch(manifest, "--out-dir", out, "--model", tiny_bundle, *TINY, "--json", "--no-fail-exit", "-v")
    assert result.exit_code == 0, result.output
    scenes = {s["name"]: s for s in json.loads(result.stdout)["scenes"]}
    assert {n: s["status"] for n, s in scenes.items()} == {"a": "done", "b": "done", "c": "done",
                                                             "missing": "failed"}
    reason = scenes["missing"]["reason"]
    assert "not found" in reason and "s3://archive/scenes/missing.tif" in reason
    # the same pixels from S3 and from nginx give the same outputs
    assert (out / "a_classes.tif").read_bytes() == (out / "c_classes.tif").read_bytes()
    recorded = rows(out)
    assert recorded["c"]["input"] == f"{server.url}/c.tif?…" and "|" in recorded["a"]["input_fp"]
    assert not leaked(out, result.output, result.stderr)

    # a rerun asks each object for its headers only and skips them all; a replaced object is recomputed
    again = run_batch(str(manifest), out, tiny_config(tiny_bundle), BatchOptions(), SPEC)
    assert statuses(again) == {"a": "skipped", "b": "skipped", "c": "skipped", "missing": "skipped"}
    s3.upload_file(str(make_scene("b2.tif", seed=9, width=256, height=192)), "archive", "scenes/b.tif")
    replaced = run_batch(str(manifest), out, tiny_config(tiny_bundle), BatchOptions(), SPEC)
    assert statuses(replaced) == {"a": "skipped", "b": "done", "c": "skipped", "missing": "skipped"}
    assert not leaked(out)


def test_static_stac_catalogue_over_http(web: Any, make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """Catalog -> Collection -> Items by relative links, assets read in place; a remote catalogue that names a
    local file (file://) gets that item refused, not read."""
    server, root = web
    make_cog(make_scene("x.tif", width=256, height=256), root / "data" / "x.tif")
    local = make_scene("secret-local.tif")
    (root / "stac" / "aerial").mkdir(parents=True)
    docs = {"stac/catalog.json": {"type": "Catalog", "id": "root", "links": [
                {"rel": "child", "href": "./aerial/collection.json"}, {"rel": "self", "href": "catalog.json"}]},
            "stac/aerial/collection.json": {"type": "Collection", "id": "aerial", "links": [
                {"rel": "item", "href": "item-x.json"}, {"rel": "item", "href": "item-local.json"},
                {"rel": "parent", "href": "../catalog.json"}]},
            "stac/aerial/item-x.json": stac_item("tile-x", "../../data/x.tif"),
            "stac/aerial/item-local.json": stac_item("tile-local", f"file://{local}")}
    for name, doc in docs.items():
        (root / name).write_text(json.dumps(doc))
    url = f"{server.url}/stac/catalog.json"
    refs = {r.name: r for r in list_scenes(url)}
    assert refs["tile-x"].path == f"{server.url}/data/x.tif" and not refs["tile-x"].problem
    assert "refused" in refs["tile-local"].problem and "local file" in refs["tile-local"].problem
    summary = run_batch(url, tmp_path / "out", tiny_config(tiny_bundle), BatchOptions(), SPEC)
    assert statuses(summary) == {"tile-x": "done", "tile-local": "failed"}
    assert (tmp_path / "out" / "tile-x.gpkg").is_file()
    with pytest.raises(ConfigError, match="HTTP 404"):
        list_scenes(f"{server.url}/stac/nope.json")


def test_stac_api_search(web: Any, make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """pystac-client against a loopback STAC API (POST /search); the search's filters reach the API."""
    pytest.importorskip("pystac_client", reason="pystac-client is the stac extra: pip install -e '.[stac]'")
    server, root = web
    make_cog(make_scene("y.tif", width=256, height=256), root / "y.tif")
    items = [stac_item("inside", f"{server.url}/y.tif"),
             stac_item("elsewhere", f"{server.url}/y.tif", bbox=(10.0, 50.0, 10.1, 50.1)),
             stac_item("other-collection", f"{server.url}/y.tif", collection="sar")]
    with StacApi(items) as api:
        out = tmp_path / "out"
        result = batch("--stac-api", api.url, "--collection", "aerial", "--bbox", "2.5,45.0,3.5,45.5",
                       "--datetime", "2024-01-01/2024-12-31", "--query", "eo:cloud_cover<10", "--out-dir", out,
                       "--model", tiny_bundle, *TINY, "--json")
        assert result.exit_code == 0, result.output
        assert {s["name"]: s["status"] for s in json.loads(result.stdout)["scenes"]} == {"inside": "done"}
        body = api.searches[-1]
        assert body["collections"] == ["aerial"] and body["bbox"] == [2.5, 45.0, 3.5, 45.5]
        assert body["query"] == {"eo:cloud_cover": {"lt": 10}} and body["datetime"].startswith("2024-01-01")
        none = batch("--stac-api", api.url, "--collection", "nothing-here", "--out-dir", out, "--model",
                     tiny_bundle)
        assert none.exit_code == 1 and "found no items" in none.stderr and len(none.stderr.splitlines()) == 1
    usage = batch("--stac-api", "http://127.0.0.1:9/", "--out-dir", out)
    assert usage.exit_code == 2 and "--collection" in usage.stderr
    both = batch(tmp_path, "--stac-api", "http://127.0.0.1:9/", "--collection", "c", "--out-dir", out)
    assert both.exit_code == 2 and "not both" in both.stderr


@pytest.mark.slow
def test_a_killed_remote_batch_resumes_without_recomputing(web: Any, make_scene: Any, tiny_bundle: Path,
                                                           tmp_path: Path) -> None:
    server, root = web
    for i in range(4):
        make_cog(make_scene(f"s{i}.tif", seed=i, width=320, height=320), root / f"s{i}.tif")
    manifest = tmp_path / "scenes.txt"
    manifest.write_text("".join(f"{server.url}/s{i}.tif\n" for i in range(4)))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "geoseg", "batch", str(manifest), "--out-dir", str(out), "--model",
            str(tiny_bundle), *TINY[:-2], "--workers", "1", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = wait_for_done(out, proc)
        assert proc.poll() is None, "the batch finished before it could be killed; use more scenes"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = {n for n, r in rows(out).items() if r["status"] == "done"}
    assert done and len(done) < 4
    before = len(Path(server.log).read_text().splitlines())
    resumed = run_batch(str(manifest), out, tiny_config(tiny_bundle, workers=1), BatchOptions(), SPEC)
    assert {s.name for s in resumed.scenes if s.status == "skipped"} == done
    assert {s.name for s in resumed.scenes if s.status == "done"} == {f"s{i}" for i in range(4)} - done
    # the scenes done before the kill were asked for their headers, never read again
    requests = Path(server.log).read_text().splitlines()[before:]
    for name in done:
        methods = {line.split()[2] for line in requests if line.split()[3] == f"/{name}.tif"}
        assert methods == {"HEAD"}, (name, requests)
