"""Remote scenes for ``geoseg infer``, read through GDAL's network layer from real servers on loopback (nginx).

Outputs of a scene over HTTP are the outputs of the same file on disk; every failure is one line; a local file
is reached only by naming it, never through a URL or a redirect.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from click.testing import CliRunner, Result

from geoseg.cli import main
from geoseg.errors import SceneError
from geoseg.paths import check_input
from geoseg.remote import gdal_path, is_remote, redact
from geoseg.scene import open_scene
from tests.remote_servers import make_cog, web  # noqa: F401 (fixture)

TINY = ("--tile", "128", "--halo", "32", "--block-size", "128", "--device", "cpu")


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def user_error(result: Result, *needles: str) -> str:
    """One line on stderr, exit 1, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def test_paths_and_redaction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
    assert gdal_path("s3://b/k/a.tif") == "/vsis3/b/k/a.tif"
    assert gdal_path("gs://b/a.tif") == "/vsigs/b/a.tif" and gdal_path("az://c/a.tif") == "/vsiaz/c/a.tif"
    assert gdal_path("/vsis3/b/a.tif") == "/vsis3/b/a.tif" and gdal_path("/data/a.tif") == "/data/a.tif"
    assert is_remote("/vsicurl/https://h/a.tif") and not is_remote("file:///a.tif") and not is_remote("a.tif")
    monkeypatch.setenv("AZURE_STORAGE_ACCESS_KEY", "azure-key-value-42")
    text = redact("https://bob:hunter22@h:8/a.tif?X-Amz-Signature=abc&x=1: 403 (key azure-key-value-42)")
    assert text == "https://h:8/a.tif?…: 403 (key ***)"
    with pytest.raises(SceneError, match="/vsizip/.*not read"):
        check_input(f"/vsizip/{tmp_path}/a.zip/s.tif")
    with pytest.raises(SceneError, match="not named as a GeoTIFF"):
        check_input("https://h/a.jp2")


def _outputs(folder: Path) -> tuple[np.ndarray, dict[str, list[bytes]]]:
    with rasterio.open(folder / "c.tif") as src:
        classes = src.read()
    listed = gpd.list_layers(folder / "v.gpkg")
    layers = {name: sorted(gpd.read_file(folder / "v.gpkg", layer=name).geometry.to_wkb().tolist())
              for name in listed[listed["geometry_type"].notna()]["name"]}
    return classes, layers


def test_remote_cog_outputs_equal_the_local_file(web: Any, make_scene: Any, tiny_bundle: Path,
                                                 tmp_path: Path) -> None:
    server, root = web
    cog = make_cog(make_scene(width=320, height=300, seed=3), root / "scenes" / "a.tif")
    results = {}
    for where, scene in (("local", cog), ("remote", f"{server.url}/scenes/a.tif")):
        folder = tmp_path / where
        folder.mkdir()
        # one worker remote: its reads come in one order, so the bytes fetched do not depend on timing (two
        # threads can fetch overlapping ranges at once); outputs do not depend on the workers (DESIGN)
        result = invoke("infer", scene, "--out", folder / "v.gpkg", "--raster-out", folder / "c.tif",
                        "--model", tiny_bundle, *TINY, "--workers", "1" if where == "remote" else "2")
        assert result.exit_code == 0, result.output
        results[where] = _outputs(folder)
        if where == "remote":
            assert (folder / "c.tif").read_bytes() == (tmp_path / "local" / "c.tif").read_bytes()
    np.testing.assert_array_equal(results["remote"][0], results["local"][0])
    assert results["remote"][1] == results["local"][1] and any(results["local"][1].values())
    # range reads: about one copy of the file went over the wire, not one per block
    assert server.bytes_sent() <= 1.3 * cog.stat().st_size, open(server.log).read()


def test_remote_failures_are_one_line(web: Any, make_scene: Any, tiny_bundle: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server, root = web
    scene = make_scene(width=320, height=300)
    (root / "norange").mkdir()
    # large enough that GDAL cannot take one whole answer for the file (it does for a small one)
    (root / "norange" / "a.tif").write_bytes(make_scene("big.tif", width=1200, height=1200).read_bytes())
    (root / "private").mkdir()
    (root / "private" / "a.tif").write_bytes(scene.read_bytes())
    (root / "photo.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(70000))
    out = ("--out", tmp_path / "v.gpkg", "--model", tiny_bundle, *TINY)
    user_error(invoke("infer", f"{server.url}/missing.tif", *out), "missing.tif", "not found", "404")
    user_error(invoke("infer", f"{server.url}/private/a.tif", *out), "access denied", "credentials")
    user_error(invoke("infer", f"{server.url}/norange/a.tif", *out), "ignores HTTP range requests")
    user_error(invoke("infer", f"{server.url}/photo.tif", *out), "not a GeoTIFF", "PNG")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    signed = f"{server.url.replace('//', '//bob:hunter22pass@')}/busy/a.tif?X-Amz-Signature=sigSECRET42"
    line = user_error(invoke("infer", signed, *out), f"{server.url}/busy/a.tif?…", "HTTP 503", "retries")
    assert "hunter22pass" not in line and "sigSECRET42" not in line
    assert not (tmp_path / "v.gpkg").exists()


def test_a_striped_remote_geotiff_warns_once(web: Any, make_scene: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Readable, only slower (each window fetches whole rows): a warning with the fix, not an error."""
    server, root = web
    striped = make_scene("striped.tif", width=1100, height=64, tiled=False, blockxsize=None, blockysize=None)
    (root / "striped.tif").write_bytes(striped.read_bytes())
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        for _ in range(2):
            open_scene(f"{server.url}/striped.tif")
    warned = [r.getMessage() for r in caplog.records if "striped" in r.getMessage()]
    assert len(warned) == 1 and "gdal_translate -of COG" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        open_scene(str(striped))  # on disk: no warning
    assert not caplog.records


def test_a_timeout_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path, tmp_path: Path) -> None:
    """A server that accepts connections and never answers: GDAL's own timeout, set small here."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a.tif"
        user_error(invoke("infer", url, "--out", tmp_path / "v.gpkg", "--model", tiny_bundle, *TINY), "timed out",
                   "GDAL_HTTP_TIMEOUT")


def test_local_files_only_when_named(web: Any, make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """``file://`` is the local path it names (checked as one); a server's redirect to a local file is not
    followed (libcurl refuses redirects to file://), so no file is read that the user did not name."""
    server, root = web
    local = make_scene("local-only.tif", width=320, height=300)  # the redirect's target (remote_servers.py)
    out = tmp_path / "v.gpkg"
    result = invoke("infer", f"file://{local}", "--out", out, "--model", tiny_bundle, *TINY)
    assert result.exit_code == 0, result.output
    user_error(invoke("infer", f"file://{tmp_path}/nope.tif", "--out", out, "--overwrite", "--model", tiny_bundle,
                      *TINY), "nope.tif", "no such file")
    user_error(invoke("infer", f"file://{local}", "--raster-out", local, "--overwrite", "--model", tiny_bundle, *TINY),
               "an input is never overwritten")
    line = user_error(invoke("infer", f"{server.url}/to-local.tif", "--out", tmp_path / "w.gpkg",
                             "--model", tiny_bundle, *TINY), "to-local.tif")
    assert "local-only" not in line
    assert not (tmp_path / "w.gpkg").exists()


@pytest.mark.slow
def test_worker_processes_read_the_url_themselves(web: Any, make_scene: Any, tiny_bundle: Path,
                                                  tmp_path: Path) -> None:
    """With worker processes, each opens the URL in its own GDAL, in geoseg's settings, and reads its blocks;
    the outputs are those of the local file read by threads."""
    server, root = web
    cog = make_cog(make_scene(width=300, height=260, seed=5), root / "p.tif")
    for where, scene, how in (("local", cog, "threads"), ("remote", f"{server.url}/p.tif", "processes")):
        result = invoke("infer", scene, "--raster-out", tmp_path / f"{where}.tif", "--model", tiny_bundle, *TINY,
                        "--scheduler", how, "--workers", "1")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "remote.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()


def test_the_bench_fallback_server_serves_ranges(make_scene: Any, tmp_path: Path) -> None:
    """Without nginx, ``bench infer --remote`` serves from the standard library's server with range support; a
    window read fetches its tiles, not the file."""
    from geoseg.remote_bench import serve
    from geoseg.scene import read_block

    scene = make_scene("r.tif", width=1200, height=1200)
    with serve(tmp_path, nginx=False) as server:
        assert server.kind == "python"
        info = open_scene(f"{server.url}/r.tif")
        data, valid = read_block(info, (1, 2, 3), Window.from_slices((0, 64), (0, 64), boundless=True))
        with rasterio.open(scene) as src:
            np.testing.assert_array_equal(data, src.read(window=((0, 64), (0, 64))))
        assert 0 < server.bytes_sent() < scene.stat().st_size / 4
