"""geoseg in real QGIS (3.22, headless): the plugin installed into a throw-away profile, enabled and run through
``qgis_process`` and through QGIS's Python (cancel), with the tiny bundle so each run takes seconds.

QGIS runs with the system python3 (python3-qgis), never the project venv; the plugin calls this venv's geoseg.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoseg.models.bundle import read_meta

SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).with_name("qgis_probe.py")


def _qgis_process() -> str | None:
    # Debian's qgis_process wrapper passes --noversioncheck, which the 3.22 binary rejects: call the binary itself
    found = shutil.which("qgis_process")
    binary = Path(f"{found}.bin") if found else None
    return str(binary) if binary and binary.exists() else found


QGIS_PROCESS = _qgis_process()


def _has_pyqgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    QGIS_PROCESS is None or not _has_pyqgis(),
    reason="QGIS is not installed here (needs qgis_process and python3-qgis: apt-get install qgis python3-qgis; "
           ".ci/run installs them)")


@pytest.fixture(scope="module")
def qgis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A temporary HOME with its own QGIS profile, the plugin installed by ``geoseg qgis install`` and enabled."""
    home = tmp_path_factory.mktemp("qgis-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "QGIS_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(home))
    profiles = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles"
    done = subprocess.run([sys.executable, "-m", "geoseg", "qgis", "install", "--profiles-dir", str(profiles)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    plugins = profiles / "default" / "python" / "plugins"
    recorded = json.loads((plugins / "geoseg" / "geoseg_env.json").read_text())
    assert recorded["command"] == [sys.executable, "-m", "geoseg"]
    enabled = qgis_process(env, "plugins", "enable", "geoseg")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert "* geoseg" in enabled.stdout  # listed as an enabled plugin with a Processing provider
    return {"env": env, "plugins": plugins, "home": home}


def qgis_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert QGIS_PROCESS is not None
    return subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, env=env, timeout=300)


def probe(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([SYSTEM_PYTHON, str(PROBE), *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def write_scene(path: Path, size: int, bands: int = 3) -> Path:
    rng = np.random.default_rng(1)
    data = (rng.random((bands, size, size)) * 255).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint8",
                       crs="EPSG:32631", transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000), tiled=True) as dst:
        dst.write(data)
    return path


def test_algorithms_listed_with_their_parameters(qgis: dict[str, Any]) -> None:
    listed = qgis_process(qgis["env"], "list")
    assert listed.returncode == 0, listed.stderr
    for alg in ("geoseg:infer", "geoseg:batch", "geoseg:eval"):
        assert alg in listed.stdout
    helped = qgis_process(qgis["env"], "help", "geoseg:infer")
    for param in ("INPUT", "OUTPUT", "RASTER_OUTPUT", "MODEL", "CLASSES", "REGULARIZE", "MIN_AREA_M2", "DEVICE"):
        assert f"{param}:" in helped.stdout, (param, helped.stdout)


def test_infer_then_eval_in_qgis(qgis: dict[str, Any], tmp_path: Path, tiny_bundle: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 256)
    out, cls = tmp_path / "out" / "b.gpkg", tmp_path / "out" / "c.tif"
    out.parent.mkdir()
    ran = qgis_process(qgis["env"], "--json", "run", "geoseg:infer", "--", f"INPUT={scene}", f"OUTPUT={out}",
                       f"RASTER_OUTPUT={cls}", f"MODEL={tiny_bundle}", "MIN_AREA_M2=0", "DEVICE=1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    assert results["OUTPUT"] == str(out) and results["BUILDINGS"] == f"{out}|layername=buildings"
    seen = probe(qgis["env"], "layers", str(out), str(cls))
    meta = read_meta(str(tiny_bundle))
    colours = {c.layer: c.colour for c in meta.classes if c.layer}
    for layer in ("buildings", "roads"):  # styled from layer_styles, in the bundle's class colour
        assert seen[layer]["valid"] and seen[layer]["crs"] == "EPSG:32631", seen
        assert seen[layer]["renderer"] == "singleSymbol" and seen[layer]["colour"] == colours[layer], seen
    assert seen["buildings"]["features"] > 0
    assert seen["raster"]["renderer"] == "paletted"
    assert [c[:3] for c in seen["raster"]["classes"]] == [[k, c.name, c.colour] for k, c in enumerate(meta.classes)]

    report = tmp_path / "out" / "report.html"
    ran = qgis_process(qgis["env"], "run", "geoseg:eval", "--", f"PRED={out}", f"TRUTH={out}", f"OUTPUT={report}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    text = report.read_text()
    assert "<table" in text and "building" in text and "1.000" in text  # a result scored against itself


def test_bad_input_is_a_processing_error(qgis: dict[str, Any], tmp_path: Path, tiny_bundle: Path) -> None:
    scene = write_scene(tmp_path / "two.tif", 64, bands=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ran = qgis_process(qgis["env"], "run", "geoseg:infer", "--", f"INPUT={scene}", f"OUTPUT={out_dir / 'b.gpkg'}",
                       f"MODEL={tiny_bundle}")
    assert ran.returncode != 0
    said = ran.stdout + ran.stderr
    assert "has 2 band(s) but model" in said and "Traceback" not in said, said
    assert list(out_dir.iterdir()) == []
    if not torch.cuda.is_available():  # DEVICE=cuda on a machine without CUDA: geoseg's one line, as the error
        good = write_scene(tmp_path / "good.tif", 64)
        ran = qgis_process(qgis["env"], "run", "geoseg:infer", "--", f"INPUT={good}", f"OUTPUT={out_dir / 'b.gpkg'}",
                           f"MODEL={tiny_bundle}", "DEVICE=2")
        said = ran.stdout + ran.stderr
        assert ran.returncode != 0 and "no CUDA device is available" in said and "Traceback" not in said, said
        assert list(out_dir.iterdir()) == []


def test_cancel_leaves_nothing(qgis: dict[str, Any], tmp_path: Path, tiny_bundle: Path) -> None:
    scene = write_scene(tmp_path / "big.tif", 1024)  # 16+ blocks: the run is far from done at the first
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    params = {"INPUT": str(scene), "OUTPUT": str(out_dir / "b.gpkg"), "RASTER_OUTPUT": str(out_dir / "c.tif"),
              "MODEL": str(tiny_bundle), "DEVICE": 1}
    seen = probe(qgis["env"], "cancel", str(qgis["plugins"]), json.dumps(params))
    assert seen["cancelled"] and not seen["ok"], seen
    assert seen["progress"] and 0 < seen["progress"][0] < 100, seen
    assert any("cancelled" in e for e in seen["errors"]), seen
    assert list(out_dir.iterdir()) == []


def test_toolbox_run_loads_outputs_styled(qgis: dict[str, Any], tmp_path: Path, tiny_bundle: Path) -> None:
    """As from the toolbox (processing.runAndLoadResults): every output lands in the project, styled."""
    scene = write_scene(tmp_path / "scene.tif", 256)
    params = {"INPUT": str(scene), "OUTPUT": str(tmp_path / "b.gpkg"), "RASTER_OUTPUT": str(tmp_path / "c.tif"),
              "MODEL": str(tiny_bundle), "MIN_AREA_M2": 0, "DEVICE": 1}
    seen = probe(qgis["env"], "load", str(qgis["plugins"]), json.dumps(params))
    meta = read_meta(str(tiny_bundle))
    layers = seen["layers"]
    assert set(layers) == {"buildings", "roads", "road_centerlines", "Class raster"}, layers
    assert layers["buildings"]["features"] > 0
    for c in meta.classes[1:]:
        assert layers[c.layer]["renderer"] == "singleSymbol" and layers[c.layer]["colour"] == c.colour, layers
    raster = layers["Class raster"]
    assert raster["renderer"] == "paletted"
    assert raster["classes"] == [[k, c.name, c.colour, 0 if k == 0 else 255] for k, c in enumerate(meta.classes)]


def test_batch_in_qgis(qgis: dict[str, Any], tmp_path: Path, tiny_bundle: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene(folder / "a.tif", 128)
    write_scene(folder / "b.tif", 64, bands=2)  # fails (band mismatch): reported, the other scene still done
    out_dir = tmp_path / "results"
    ran = qgis_process(qgis["env"], "--json", "run", "geoseg:batch", "--", f"INPUT={folder}", f"OUTPUT_DIR={out_dir}",
                       f"MODEL={tiny_bundle}", "DEVICE=1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    results = json.loads(ran.stdout)["results"]
    assert (results["DONE"], results["FAILED"]) == (1, 1), results
    assert (out_dir / "a.gpkg").is_file() and (out_dir / "a_classes.tif").is_file()
    assert not list(out_dir.glob("b*"))
    assert "has 2 band(s)" in ran.stdout + ran.stderr  # the failed scene's reason, in the Processing log
