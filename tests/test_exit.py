"""A run that fails on corrupt pixels exits 1 with its one line: no C++ abort at interpreter exit (issue 17.3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from geoseg.models import BundleMeta, build_model, save_bundle
from tests.conftest import CLASSES
from tests.test_errors import RUN_LINE

# Runs the CLI as ``python -m geoseg`` does, then reports which threads are still alive as the interpreter exits:
# a thread of ours still inside torch at that point is what made the exit abort (SIGABRT, exit 134).
HARNESS = """
import runpy, sys, threading
sys.argv = ["geoseg", *sys.argv[1:]]
try:
    runpy.run_module("geoseg", run_name="__main__")
finally:
    alive = [t.name for t in threading.enumerate() if t is not threading.main_thread() and "preload" in t.name]
    print("ALIVE=" + ",".join(alive), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, heavy model (ResNet-101 U-Net, random weights): it takes seconds to build, so a scene whose very
    first read fails is refused while the model is still loading."""
    args = dict(encoder_name="resnet101", encoder_weights=None, classes=3, in_channels=3)
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, band_names=("b1", "b2", "b3"),
                      band_indexes=(1, 2, 3), tile=128, halo=32, stride=32)
    return save_bundle(tmp_path_factory.mktemp("slow") / "slow.safetensors", build_model("smp:Unet", **args), meta,
                       half=True)


@pytest.mark.slow
def test_truncated_geotiff_exits_1_with_no_thread_left_in_torch(make_scene: Any, slow_bundle: Path,
                                                                tmp_path: Path) -> None:
    scene = make_scene(compress="DEFLATE")
    data = scene.read_bytes()
    scene.write_bytes(data[:len(data) // 20])  # the header survives, every tile is cut off
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", HARNESS, "infer", str(scene), "--out", str(out / "b.gpkg"),
                           "--model", str(slow_bundle), "--workers", "1"], capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stderr.splitlines() if not RUN_LINE.match(line)]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 2 and lines[0].startswith("geoseg: error: ") and "corrupt or truncated" in lines[0], lines
    assert lines[1] == "ALIVE=", "the model-loading thread was still running at exit"
    assert sorted(p.name for p in out.iterdir()) == []
