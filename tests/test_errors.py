"""User errors: one line naming the file, the problem and the fix; exit != 0; no traceback; nothing left behind.

Each case runs in-process through click's CliRunner; a few representative ones (and Ctrl-C) also run as a real
``python -m geoseg`` subprocess, where warnings, logging and interpreter shutdown could add noise.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner, Result
from rasterio.control import GroundControlPoint
from rasterio.rpc import RPC

from geoseg.cli import main
from geoseg.errors import ConfigError, GeosegError, SceneError, SceneReadError
from tests.waiting import wait_until

TILING = ("--tile", "128", "--halo", "32")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty folder for outputs: after a failed run it must still be empty (no temp files either)."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def infer_args(scene: Path | str, out: Path | str, model: Path | str, *extra: str) -> list[str]:
    return ["infer", str(scene), "--out", str(out), "--model", str(model), *TILING, *extra]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


# what a run prints before work and while it runs (the plan, progress lines for logs): an error found mid-run
# comes after them, and must still be the one line of its own
RUN_LINE = re.compile(r"geoseg: (\S.*: \d+x\d+ px \(.*Mpx\); .* tiles of .* blocks|infer: (estimate|\d+%) )")


def one_line(text: str) -> str:
    """The only line of ``text`` besides the run's plan and progress lines; fails if there are more or it is
    empty."""
    lines = [line for line in text.splitlines() if not RUN_LINE.match(line)]
    assert len(lines) == 1 and lines[0].strip(), f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def assert_user_error(result: Result, *needles: str) -> str:
    """A handled user error: SystemExit(!=0), one line on stderr holding every needle, nothing on stdout."""
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}\n{result.output}"
    assert result.exit_code != 0
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("geoseg: error: ")
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder``, hidden files included."""
    return sorted(p.name for p in folder.iterdir())


def assert_nothing_written(tmp_path: Path, out_dir: Path, keep: tuple[str, ...] = ()) -> None:
    assert leftovers(out_dir) == sorted(keep)
    assert not list(tmp_path.rglob(".*.tmp-*")), "temporary output left behind"
    assert not list(tmp_path.rglob(".geoseg-probe-*")), "write probe left behind"


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as starting Dask (the error should come before any compute)."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("dask_client started: the error was not caught before compute")

    monkeypatch.setattr("geoseg.infer.dask_client", boom)


# --- the scene -------------------------------------------------------------------------------------------------

def test_missing_scene(tmp_path: Path, out_dir: Path, tiny_bundle: Path, no_compute: None) -> None:
    result = invoke(infer_args(tmp_path / "nowhere.tif", out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "nowhere.tif", "no such file", "check the path")
    assert_nothing_written(tmp_path, out_dir)


def test_text_file_is_not_a_raster(tmp_path: Path, out_dir: Path, tiny_bundle: Path, no_compute: None) -> None:
    scene = tmp_path / "scene.tif"
    scene.write_text("this is not a GeoTIFF\n")
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "scene.tif", "not a GeoTIFF", "convert")
    assert_nothing_written(tmp_path, out_dir)


def test_png_is_refused_by_the_driver_allow_list(tmp_path: Path, out_dir: Path, tiny_bundle: Path,
                                                  no_compute: None) -> None:
    scene = tmp_path / "scene.png"  # a georeferenced PNG: readable by GDAL, but not through the allow-list
    with rasterio.open(scene, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000)) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "scene.png", "not a GeoTIFF (a PNG file)", "accepts only GeoTIFF")
    assert_nothing_written(tmp_path, out_dir)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])


def _corrupt_middle_tile(path: Path) -> None:
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_1", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset:offset + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _corrupt_middle_tile], ids=["truncated", "corrupt-deflate"])
def test_corrupt_tiff_discovered_mid_read(damage: Any, tmp_path: Path, out_dir: Path, tiny_bundle: Path,
                                          make_scene: Any) -> None:
    scene = make_scene(compress="DEFLATE")
    damage(scene)
    with rasterio.open(scene) as src:  # the header is intact: only a pixel read finds the damage
        assert src.shape == (200, 300)
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle, "--raster-out", str(out_dir / "c.tif"),
                               "--workers", "1"))
    assert_user_error(result, "scene.tif", "read failed at rows", "TIFFReadEncodedTile", "corrupt or truncated")
    assert_nothing_written(tmp_path, out_dir)


def test_corrupt_tiff_raises_scene_read_error_from_the_worker(tmp_path: Path, out_dir: Path, tiny_bundle: Path,
                                                              make_scene: Any) -> None:
    """With -v the exception itself escapes: the type survives the trip back from the Dask worker thread."""
    scene = make_scene(compress="DEFLATE")
    _truncate(scene)
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle, "--workers", "1", "-v"))
    assert isinstance(result.exception, SceneReadError) and isinstance(result.exception, OSError)
    assert str(scene) in str(result.exception)
    assert_nothing_written(tmp_path, out_dir)


def test_no_crs_no_transform(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any,
                             no_compute: None) -> None:
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        scene = make_scene(crs=None, transform=None)
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "scene.tif", "no CRS and no geotransform", "gdal_edit.py -a_srs")
    assert_nothing_written(tmp_path, out_dir)


def test_no_crs_with_transform(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any,
                               no_compute: None) -> None:
    scene = make_scene(crs=None)
    line = assert_user_error(invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle)), "scene.tif", "no CRS;")
    assert "-a_ullr" not in line


def test_gcp_only(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any, no_compute: None) -> None:
    gcps = [GroundControlPoint(row=r, col=c, x=2.0 + c * 1e-5, y=48.0 - r * 1e-5)
            for r, c in ((0, 0), (0, 300), (200, 0), (200, 300))]
    scene = make_scene(crs="EPSG:4326", transform=None, gcps=gcps)
    with rasterio.open(scene) as src:
        assert len(src.gcps[0]) == 4
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "scene.tif", "only by GCPs", "gdalwarp")
    assert_nothing_written(tmp_path, out_dir)


def test_rpc_only(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any, no_compute: None) -> None:
    coeff = [0.0] * 20
    rpcs = RPC(height_off=100.0, height_scale=500.0, lat_off=48.0, lat_scale=0.01, line_den_coeff=[1.0] + coeff[1:],
               line_num_coeff=[0.0, 0.0, -1.0] + coeff[3:], line_off=100.0, line_scale=100.0, long_off=2.0,
               long_scale=0.01, samp_den_coeff=[1.0] + coeff[1:], samp_num_coeff=[0.0, 1.0] + coeff[2:],
               samp_off=150.0, samp_scale=150.0)
    scene = make_scene(crs=None, transform=None, rpcs=rpcs)
    with rasterio.open(scene) as src:
        assert src.rpcs is not None
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))
    assert_user_error(result, "scene.tif", "only by RPCs", "warp it", "gdalwarp -rpc")
    assert_nothing_written(tmp_path, out_dir)


def test_band_mismatch_fails_before_compute(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any,
                                            no_compute: None) -> None:
    # MINISBLACK: four data bands (e.g. RGB + NIR); GDAL's default for 4 x uint8 is RGBA, whose alpha only masks
    scene = make_scene(bands=4, photometric="MINISBLACK")
    result = invoke(infer_args(scene, out_dir / "b.gpkg", tiny_bundle))  # no_compute: fails if Dask starts
    assert_user_error(result, "scene.tif", "has 4 band(s)", "expects 3", "--bands 1,2,3")
    assert_nothing_written(tmp_path, out_dir)


# --- the outputs ------------------------------------------------------------------------------------------------

def test_output_folder_does_not_exist(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any,
                                      no_compute: None) -> None:
    out = tmp_path / "missing" / "b.gpkg"
    result = invoke(infer_args(make_scene(), out, tiny_bundle))
    assert_user_error(result, "b.gpkg", "does not exist", "create it first")
    assert not out.parent.exists()
    assert_nothing_written(tmp_path, out_dir)


def test_output_folder_not_writable(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any,
                                    no_compute: None) -> None:
    if os.geteuid() != 0:
        folder = out_dir
        folder.chmod(0o500)
    else:  # root ignores file modes: use a folder the kernel refuses writes in, even to root
        folder = Path("/sys")
        assert folder.is_dir()
    try:
        result = invoke(infer_args(make_scene(), folder / "b.gpkg", tiny_bundle))
    finally:
        out_dir.chmod(0o700)
    assert_user_error(result, str(folder / "b.gpkg"), "cannot write in folder", "Permission denied", "choose another")
    assert not (folder / "b.gpkg").exists()
    assert_nothing_written(tmp_path, out_dir)


@pytest.mark.parametrize("option", ["--out", "--raster-out"])
def test_existing_output_without_overwrite(option: str, tmp_path: Path, out_dir: Path, tiny_bundle: Path,
                                           make_scene: Any, no_compute: None) -> None:
    existing = out_dir / ("b.gpkg" if option == "--out" else "c.tif")
    existing.write_bytes(b"precious results")
    before = existing.stat()
    args = ["infer", str(make_scene()), option, str(existing), "--model", str(tiny_bundle), *TILING]
    assert_user_error(invoke(args), existing.name, "already exists", "--overwrite")
    assert existing.read_bytes() == b"precious results"
    assert existing.stat().st_mtime_ns == before.st_mtime_ns
    assert_nothing_written(tmp_path, out_dir, keep=(existing.name,))


# --- options, models and pipelines ------------------------------------------------------------------------------

def test_unknown_class(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any, no_compute: None) -> None:
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", tiny_bundle, "--classes", "building,tree"))
    assert_user_error(result, "--classes tree", "building, road")
    assert_nothing_written(tmp_path, out_dir)


@pytest.mark.parametrize("device", ["tpu9", "cuda:0"])
def test_bad_device(device: str, tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any) -> None:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here, so cuda:0 is a valid device")
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", tiny_bundle, "--device", device,
                               "--raster-out", str(out_dir / "c.tif"), "--workers", "1"))
    assert_user_error(result, f"--device {device}", "cpu")
    assert_nothing_written(tmp_path, out_dir)


def test_bad_scheduler(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any) -> None:
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", tiny_bundle, "--scheduler", "quantum",
                               "--raster-out", str(out_dir / "c.tif")))
    assert_user_error(result, "--scheduler quantum", "threads, processes or tcp://")
    assert_nothing_written(tmp_path, out_dir)


def test_pickle_checkpoint_refused(tmp_path: Path, out_dir: Path, make_scene: Any, no_compute: None) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x80\x04not really a pickle")
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", model))
    assert_user_error(result, "model.pt", "pickle", "geoseg models import")
    assert_nothing_written(tmp_path, out_dir)


@pytest.mark.parametrize("model", ["gone.safetensors", "no-such-model"])
def test_missing_bundle(model: str, tmp_path: Path, out_dir: Path, make_scene: Any, no_compute: None) -> None:
    path = str(tmp_path / model) if model.endswith(".safetensors") else model
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", path))
    assert_user_error(result, model, "registered")
    assert_nothing_written(tmp_path, out_dir)


def test_bundle_not_safetensors(tmp_path: Path, out_dir: Path, make_scene: Any, no_compute: None) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"garbage")
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", model))
    assert_user_error(result, "model.safetensors", "not a readable safetensors bundle")


@pytest.mark.parametrize("text, needles", [
    (None, ("pipe.yaml", "not found")),
    ("infer:\n  tile: 128\n  tyle: 64\n", ("pipe.yaml", "infer: unknown key tyle; did you mean tile?", "valid:")),
    ("nmae: x\n", ("pipe.yaml", "unknown key nmae; did you mean name?")),
    ("infer: [1, 2\n", ("pipe.yaml", "not valid YAML")),
], ids=["missing", "unknown-infer-key", "unknown-top-key", "bad-yaml"])
def test_bad_pipeline(text: str | None, needles: tuple[str, ...], tmp_path: Path, out_dir: Path, tiny_bundle: Path,
                      make_scene: Any, no_compute: None) -> None:
    pipe = tmp_path / "pipe.yaml"
    if text is not None:
        pipe.write_text(text)
    result = invoke(infer_args(make_scene(), out_dir / "b.gpkg", tiny_bundle, "--pipeline", str(pipe)))
    assert_user_error(result, *needles)
    assert_nothing_written(tmp_path, out_dir)


def test_library_raises_typed_errors(tmp_path: Path, tiny_bundle: Path, make_scene: Any) -> None:
    """The CLI's one-liners are GeosegErrors that also are the matching builtins."""
    from geoseg.infer import infer
    from geoseg.pipeline import InferConfig

    config = InferConfig(model=str(tiny_bundle), tile=128, halo=32)
    with pytest.raises(FileNotFoundError):
        infer(tmp_path / "nowhere.tif", tmp_path / "b.gpkg", config)
    with pytest.raises(SceneError) as err:
        infer(make_scene(bands=4, photometric="MINISBLACK"), tmp_path / "b.gpkg", config)
    assert isinstance(err.value, ValueError) and isinstance(err.value, GeosegError)
    with pytest.raises(ConfigError):
        infer(make_scene("s2.tif"), tmp_path / "b.gpkg", config.replace(classes=("tree",)))


# --- real subprocesses ------------------------------------------------------------------------------------------

def geoseg_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "geoseg", *args]


@pytest.mark.slow
def test_subprocess_user_errors(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any) -> None:
    """Three representative errors, and -v, as real processes (run side by side to save wall time).

    The corrupt scene fails inside a Dask worker, which logs the failure itself: that log must not show either.
    """
    existing = out_dir / "old.gpkg"
    existing.write_bytes(b"precious results")
    four = make_scene("four.tif", bands=4, photometric="MINISBLACK")
    corrupt = make_scene("corrupt.tif", compress="DEFLATE")
    _truncate(corrupt)
    cases = {
        "missing": (infer_args(tmp_path / "nowhere.tif", out_dir / "b.gpkg", tiny_bundle), "nowhere.tif"),
        "corrupt": (infer_args(corrupt, out_dir / "b.gpkg", tiny_bundle, "--raster-out", str(out_dir / "c.tif"),
                               "--workers", "1"), "corrupt.tif"),
        "exists": (infer_args(make_scene(), existing, tiny_bundle), "old.gpkg"),
        "verbose": (infer_args(four, out_dir / "b.gpkg", tiny_bundle, "-v"), "four.tif"),
    }
    procs = {name: subprocess.Popen(geoseg_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, _) in cases.items()}
    done = {name: (p.communicate(), p.returncode) for name, p in procs.items()}  # pytest-timeout is the net
    for name, ((stdout, stderr), rc) in done.items():
        needle = cases[name][1]
        assert rc != 0, (name, stderr)
        assert stdout == "", (name, stdout)
        if name == "verbose":
            assert "Traceback (most recent call last)" in stderr and "SceneError" in stderr, stderr
            assert needle in stderr.splitlines()[-1]
        else:
            assert rc == 1
            line = one_line(stderr)
            assert line.startswith("geoseg: error: ") and needle in line, line
    assert existing.read_bytes() == b"precious results"
    assert_nothing_written(tmp_path, out_dir, keep=("old.gpkg",))


HANG_NET_S = 240


def test_ctrl_c_mid_run(tmp_path: Path, out_dir: Path, tiny_bundle: Path, make_scene: Any) -> None:
    scene = make_scene(width=1500, height=1500)
    args = infer_args(scene, out_dir / "b.gpkg", tiny_bundle, "--raster-out", str(out_dir / "c.tif"),
                      "--prob-out", str(out_dir / "p.tif"), "--block-size", "256", "--workers", "1", "--device", "cpu")
    # -X faulthandler: should the run ever hang after the signal, SIGABRT makes it print every thread's stack
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", *geoseg_cmd(*args)[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # the raster sinks create their hidden staging files just before the Dask graph starts: from then on
        # there are partial outputs to clean up, which is what Ctrl-C must do
        wait_until(lambda: list(out_dir.glob(".c.tif.tmp-*")), "the run's temporary outputs", proc=proc)
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=HANG_NET_S)  # a safety net only: a hang, not a slow run
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stdout, stderr = proc.communicate()
            pytest.fail(f"no exit {HANG_NET_S} s after Ctrl-C; the run's threads:\n{stderr}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert stdout == ""
    assert "interrupted" in one_line(stderr)
    assert_nothing_written(tmp_path, out_dir)


def test_interrupted_exit_is_bounded() -> None:
    """After exit 130 a thread that never ends (what a cluster cut short mid-start can leave) cannot keep the
    process alive: it ends within the grace period, with the same code."""
    script = ("import sys, threading\n"
              "import geoseg.cli.signals as s\n"
              "s.EXIT_GRACE_S = 0.2\n"
              "threading.Thread(target=threading.Event().wait).start()  # not a daemon: joined at exit\n"
              "s.run(lambda: sys.exit(130))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_NET_S)
    assert proc.returncode == 130, proc.stderr
