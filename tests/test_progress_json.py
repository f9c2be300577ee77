"""``--progress json``: the machine-readable progress stream programs (the QGIS plugin) read from stderr, and
SIGTERM stopping a run as cleanly as Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from geoseg.cli import main

TILING = ("--tile", "128", "--halo", "32", "--device", "cpu")


def events(stderr: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(progress events, other lines) of a command's stderr: every line is one or the other."""
    evs, other = [], []
    for line in stderr.splitlines():
        if line.startswith("{"):
            evs.append(json.loads(line))
        elif line.strip():
            other.append(line)
    return evs, other


def assert_stream(evs: list[dict[str, Any]], stage: str, total: float) -> None:
    assert evs and all(e["event"] == "progress" and e["stage"] == stage for e in evs), evs
    percents = [e["percent"] for e in evs]
    assert percents[0] == 0 and percents[-1] == 100.0 and percents == sorted(percents), percents
    assert evs[-1]["done"] == evs[-1]["total"] == total


def test_infer_progress_json(make_scene, tiny_bundle: Path, tmp_path: Path) -> None:
    scene = make_scene(width=300, height=260)
    out = tmp_path / "b.gpkg"
    result = CliRunner().invoke(main, ["infer", str(scene), "--out", str(out), "--model", str(tiny_bundle), *TILING,
                                       "--block-size", "128", "--workers", "1", "--progress", "json"])
    assert result.exit_code == 0, result.output
    evs, other = events(result.stderr)
    assert_stream(evs, "infer", 300 * 260)
    assert len(evs) >= 1 + 4  # the start event, then one per block (several blocks here)
    assert len(other) == 1 and str(out) in other[0]  # the summary stays a plain line, for the log
    assert out.exists()


def test_batch_and_eval_progress_json(make_scene, tiny_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"s{i}.tif").write_bytes(make_scene(f"s{i}.tif", width=200, height=150, seed=i).read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", str(folder), "--out-dir", str(out), "--model", str(tiny_bundle),
                                       *TILING, "--block-size", "128", "--workers", "1", "--progress", "json", "-q"])
    assert result.exit_code == 0, result.output
    evs, _ = events(result.stderr)
    assert_stream(evs, "batch", 2)
    assert any(0 < e["done"] < 2 and e["done"] != 1 for e in evs), "no progress inside a scene"

    report = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--pred", str(out / "s0_classes.tif"), "--truth",
                                       str(out / "s1_classes.tif"), "--out", str(report), "--progress", "json", "-q"])
    assert result.exit_code == 0, result.output
    evs, _ = events(result.stderr)
    assert_stream(evs, "eval", 1)
    assert json.loads(report.read_text()) == json.loads(result.stdout)


def test_sigterm_mid_run_removes_partial_outputs(make_scene, tiny_bundle: Path, tmp_path: Path) -> None:
    """SIGTERM (what QProcess.terminate and systemd send) once the first block is in: exit 130, nothing left."""
    scene = make_scene(width=1200, height=1200)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-m", "geoseg", "infer", str(scene), "--out", str(out_dir / "b.gpkg"), "--model",
           str(tiny_bundle), *TILING, "--raster-out", str(out_dir / "c.tif"), "--block-size", "128", "--workers", "1",
           "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait for the event, not a time: the first finished block
            if line.startswith("{") and json.loads(line)["done"] > 0:
                break
        assert proc.poll() is None, "the run finished before it could be stopped; use a bigger scene"
        assert any(p.name.startswith(".c.tif.tmp-") for p in out_dir.iterdir())  # a run in flight, with temps
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert list(out_dir.iterdir()) == []
