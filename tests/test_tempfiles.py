"""What killed runs leave is removed by the next run into the same folder; a live run's files never are (17.5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import rasterio

from geoseg.tempfiles import frontier_prefix, temp_name

TILING = ("--tile", "128", "--halo", "32", "--workers", "1", "--device", "cpu")


def _infer(scene: Path, out: Path, bundle: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "geoseg", "infer", str(scene), "--raster-out", str(out / f"{scene.stem}_c.tif"),
           "--prob-out", str(out / f"{scene.stem}_p.tif"), "--model", str(bundle), *TILING, "-q", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_temp(proc: subprocess.Popen, out: Path, stem: str) -> list[Path]:
    """Wait (on the event, with a generous net) until the run has created its temporary files."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted(out.glob(f".{stem}_c.tif.tmp-*"))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no temporary file appeared (exit {proc.poll()}): {proc.communicate()[1]}")


@pytest.mark.slow
def test_next_run_removes_what_killed_runs_left_but_not_a_live_runs(make_scene: Any, tiny_bundle: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    big = make_scene("killed.tif", width=1000, height=1000)
    live_scene = make_scene("live.tif", width=1000, height=1000, seed=1)
    # a run killed with SIGKILL mid-way: its staging rasters stay behind
    killed = _infer(big, out, tiny_bundle, env, "--block-size", "256")
    _wait_for_temp(killed, out, "killed")
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    stale = sorted(out.glob(".killed_*.tmp-*"))
    assert stale and any(p.name.endswith(".stage.tif") for p in stale), stale
    # a frontier folder in TMPDIR whose process ended (made by a real process that then exits)
    code = "import tempfile, geoseg.tempfiles as t; print(tempfile.mkdtemp(prefix=t.frontier_prefix()))"
    dead_frontier = Path(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                        check=True).stdout.strip())
    (dead_frontier / "0.arrays").write_bytes(b"x" * 1000)
    ours = Path(tempfile_in(tmpdir))  # this (live) test process's own frontier folder
    # a live run, stopped (so it is certainly still running) while another run cleans the folder
    live = _infer(live_scene, out, tiny_bundle, env, "--block-size", "256")
    try:
        _wait_for_temp(live, out, "live")
        live.send_signal(signal.SIGSTOP)
        live_files = sorted(out.glob(".live_*.tmp-*"))
        cleaner = _infer(make_scene("small.tif", width=200, height=150), out, tiny_bundle, env)
        _, cleaner_err = cleaner.communicate(timeout=600)
        assert cleaner.returncode == 0, cleaner_err
        assert not any(p.exists() for p in stale), "the killed run's files were left"
        assert not dead_frontier.exists()
        assert ours.is_dir(), "a live process's frontier folder was removed"
        assert all(p.exists() for p in live_files), "a live run's temporary files were removed"
    finally:
        live.send_signal(signal.SIGCONT)
    _, stderr = live.communicate(timeout=600)
    assert live.returncode == 0, stderr
    with rasterio.open(out / "live_c.tif") as src:
        assert (src.width, src.height) == (1000, 1000)
    assert not list(out.glob(".*")), "a temporary file was left"
    left = sorted(p.name for p in out.iterdir() if p.suffix == ".tif")  # beside them: the class COG's style sidecars
    assert left == ["live_c.tif", "live_p.tif", "small_c.tif", "small_p.tif"]


def tempfile_in(folder: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=frontier_prefix(), dir=folder)


def test_temp_names_carry_their_owner(tmp_path: Path) -> None:
    name = temp_name(tmp_path / "c.tif").name
    assert name.startswith(".c.tif.tmp-") and name.endswith(".tif")
    assert f".{os.getpid()}." in name
