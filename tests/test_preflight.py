"""Checks made before any compute: inputs never overwritten, outputs never shared, hints that work, exit codes and
wording, answers before torch is imported, and which scene bands feed the model (issue 17)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result

from geoseg.cli import main
from geoseg.models.bundle import read_meta
from tests.conftest import write_tiny_bundle

TILING = ("--tile", "128", "--halo", "32")


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def user_error(result: Result, *needles: str) -> str:
    """One line on stderr, exit 1 (not click's 2), no traceback; returns the line."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def digest(path: Path) -> bytes:
    return path.read_bytes()


# --- item 1: an output that is an input --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "relative"])
def test_output_that_is_the_scene_is_refused_even_with_overwrite(how: str, make_scene: Any, tiny_bundle: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    scene = make_scene()
    before = digest(scene)
    target = {"same": scene, "relative": Path("scene.tif")}.get(how, tmp_path / "alias.tif")
    if how == "symlink":
        target.symlink_to(scene)
    elif how == "hardlink":
        os.link(scene, target)
    monkeypatch.chdir(tmp_path)
    result = invoke("infer", scene, "--out", tmp_path / "b.gpkg", "--raster-out", target, "--model", tiny_bundle,
                    *TILING, "--overwrite")
    user_error(result, "--raster-out", "is the scene", "never overwritten")
    assert digest(scene) == before
    assert not (tmp_path / "b.gpkg").exists()


def test_output_on_the_scene_without_overwrite_names_the_scene(make_scene: Any, tiny_bundle: Path,
                                                                tmp_path: Path) -> None:
    """The hint must work: not "pass --overwrite" (which is refused for an input) but "write to another path"."""
    scene = make_scene()
    before = digest(scene)
    result = invoke("infer", scene, "--out", tmp_path / "b.gpkg", "--raster-out", scene, "--model", tiny_bundle,
                    *TILING)
    user_error(result, "--raster-out", "is the scene", "another path")
    assert "--overwrite to replace" not in result.output
    assert digest(scene) == before


@pytest.mark.parametrize("which", ["--model", "--pipeline"])
def test_output_that_is_the_bundle_or_pipeline_is_refused(which: str, make_scene: Any, tiny_bundle: Path,
                                                          tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("infer:\n  tile: 128\n  halo: 32\n")
    bundle = tmp_path / "model.safetensors"
    bundle.write_bytes(tiny_bundle.read_bytes())
    victim = bundle if which == "--model" else pipe
    alias = tmp_path / "alias.tif"
    alias.symlink_to(victim)
    before = digest(victim)
    result = invoke("infer", make_scene(), "--prob-out", alias, "--model", bundle, "--pipeline", pipe, "--overwrite")
    user_error(result, "--prob-out", f"is the {which}")
    assert digest(victim) == before


def test_batch_never_writes_over_its_scene(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """A hard link to the scene sits where batch writes its class raster: that scene fails, the scene survives."""
    scenes = tmp_path / "in"
    scenes.mkdir()
    scene = make_scene("in/a.tif")
    before = digest(scene)
    out = tmp_path / "out"
    out.mkdir()
    os.link(scene, out / "a_classes.tif")
    result = invoke("batch", scenes, "--out-dir", out, "--model", tiny_bundle, *TILING, "--json", "--workers", "1",
                    "--device", "cpu")
    assert result.exit_code == 1, result.output
    row = json.loads(result.stdout)["scenes"][0]
    assert row["status"] == "failed" and "is the scene" in row["reason"], row
    assert digest(scene) == before and digest(out / "a_classes.tif") == before


def test_batch_refuses_a_pipeline_inside_its_output_folder(tmp_path: Path, make_scene: Any) -> None:
    (tmp_path / "in").mkdir()
    make_scene("in/a.tif")
    out = tmp_path / "out"
    out.mkdir()
    pipe = out / "a.gpkg"  # a YAML named as batch's output for scene a
    pipe.write_text("infer:\n  tile: 512\n")
    user_error(invoke("batch", tmp_path / "in", "--out-dir", out, "--pipeline", pipe), "--pipeline", "--out-dir")
    assert pipe.read_text() == "infer:\n  tile: 512\n"


# --- item 2: two outputs on one file ----------------------------------------------------------------------------

def test_two_raster_outputs_on_one_path(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    same = tmp_path / "same.tif"
    result = invoke("infer", make_scene(), "--raster-out", same, "--prob-out", same, "--model", tiny_bundle, *TILING)
    user_error(result, "--prob-out", "the same file as --raster-out")
    assert not same.exists()


def test_two_outputs_through_a_symlink(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    real = tmp_path / "c.tif"
    real.write_bytes(b"old")
    (tmp_path / "link.tif").symlink_to(real)
    result = invoke("infer", make_scene(), "--raster-out", real, "--prob-out", tmp_path / "link.tif", "--model",
                    tiny_bundle, *TILING, "--overwrite")
    user_error(result, "the same file as --raster-out")
    assert real.read_bytes() == b"old"


def _bundle_with_layers(tmp_path: Path, building: str, road: str) -> Path:
    """A bundle whose two classes write layers of the given names (saved with geoseg's own writer)."""
    from safetensors.numpy import load_file, save_file

    path = write_tiny_bundle(tmp_path / "layers.safetensors")
    meta = read_meta(path)
    classes = (meta.classes[0], dataclasses.replace(meta.classes[1], layer=building),
               dataclasses.replace(meta.classes[2], layer=road))
    save_file(load_file(str(path)), str(path), metadata={"geoseg": dataclasses.replace(meta, classes=classes)
                                                         .to_json()})
    return path


@pytest.mark.parametrize("suffix", [".fgb", ".geojson", ".gpkg"])
def test_two_layers_on_one_name(suffix: str, make_scene: Any, tmp_path: Path) -> None:
    bundle = _bundle_with_layers(tmp_path, "objects", "Objects")  # GeoPackage table names ignore case
    result = invoke("infer", make_scene(), "--out", tmp_path / f"v{suffix}", "--model", bundle, *TILING)
    user_error(result, "building and road", "'Objects'", "--classes")
    assert not list(tmp_path.glob("v*"))


def test_layer_file_that_is_an_input(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """``--out v.fgb`` writes v_buildings.fgb: a link of that name to the bundle must not be replaced."""
    bundle = tmp_path / "model.safetensors"
    bundle.write_bytes(tiny_bundle.read_bytes())
    (tmp_path / "v_buildings.fgb").symlink_to(bundle)
    result = invoke("infer", make_scene(), "--out", tmp_path / "v.fgb", "--model", bundle, *TILING, "--overwrite")
    user_error(result, "v_buildings.fgb", "is the --model")
    assert bundle.read_bytes() == tiny_bundle.read_bytes()


# --- item 8: hints that work ------------------------------------------------------------------------------------

def _hint(line: str) -> list[str]:
    match = re.search(r"try (--tile \d+ --halo \d+)", line)
    assert match, line
    return match[1].split()


@pytest.mark.parametrize("tile, halo", [("128", "100"), ("-5", "32"), ("0", "32"), ("100", "64"), ("128", "64")])
def test_tiling_hint_then_works(tile: str, halo: str, make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    scene = make_scene(width=140, height=100)
    out = tmp_path / "c.tif"
    line = user_error(invoke("infer", scene, "--raster-out", out, "--model", tiny_bundle, "--tile", tile,
                             "--halo", halo), f"--tile {tile}")
    assert not out.exists()
    result = invoke("infer", scene, "--raster-out", out, "--model", tiny_bundle, *_hint(line), "-q")
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_tiling_error_names_the_pipeline_file(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("infer:\n  tile: 128\n  halo: 100\n")
    line = user_error(invoke("infer", make_scene(), "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle,
                             "--pipeline", pipe), f"{pipe}: infer.halo 100", "try --tile 128 --halo 32")
    assert "--halo 100" not in line  # the value came from the file, not from a flag


def test_tiling_error_names_the_bundle(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """The bundle's own halo (32) leaves no core in a 64 px tile: the message says the value is the bundle's."""
    user_error(invoke("infer", make_scene(), "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle, "--tile",
                      "64"), f"{tiny_bundle}: halo 32", "try --tile 64 --halo 0")


def test_bands_error_names_the_pipeline_file(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("infer:\n  bands: [1, 2]\n")
    user_error(invoke("infer", make_scene(), "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle,
                      "--pipeline", pipe, *TILING), f"{pipe}: infer.bands 1,2", "--bands 1,2,3")


# --- item 9: exit codes and wording -----------------------------------------------------------------------------

def test_folder_as_scene_or_output(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d.tif"
    folder.mkdir()
    user_error(invoke("infer", folder, "--out", tmp_path / "b.gpkg", "--model", tiny_bundle), "d.tif", "is a folder")
    for option in ("--out", "--raster-out"):
        out = tmp_path / ("v.gpkg" if option == "--out" else "c.tif")
        out.mkdir()
        user_error(invoke("infer", make_scene(), option, out, "--model", tiny_bundle), out.name, "is a folder")
    user_error(invoke("batch", tmp_path, "--out-dir", make_scene("f.tif")), "f.tif", "is a file, not a folder")


def test_vsizip_and_symlink_loop(tmp_path: Path, tiny_bundle: Path) -> None:
    user_error(invoke("infer", f"/vsizip/{tmp_path}/a.zip/s.tif", "--out", tmp_path / "b.gpkg"),
               "GDAL virtual paths", "/vsizip/", "unzip")
    loop = tmp_path / "loop.tif"
    loop.symlink_to(loop)
    line = user_error(invoke("infer", loop, "--out", tmp_path / "b.gpkg"), "loop.tif", "symlink loop")
    assert "no such file" not in line
    broken = tmp_path / "broken.tif"
    broken.symlink_to(tmp_path / "gone.tif")
    user_error(invoke("infer", broken, "--out", tmp_path / "b.gpkg"), "no such file (a broken symlink)")


@pytest.mark.parametrize("option", ["--raster-out", "--prob-out"])
def test_raster_output_must_be_named_tif(option: str, make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    line = user_error(invoke("infer", make_scene(), option, tmp_path / "x.png", "--model", tiny_bundle, *TILING),
                      "x.png", "GeoTIFF", ".tif")
    assert not (tmp_path / "x.png").exists()
    hint = re.search(rf"use {option} (\S+)", line)
    assert hint, line
    assert invoke("infer", make_scene(), option, hint[1], "--model", tiny_bundle, *TILING, "-q").exit_code == 0


def test_jpeg_scene_message_says_geoseg_reads_only_geotiff(tmp_path: Path, tiny_bundle: Path) -> None:
    scene = tmp_path / "photo.jpg"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(scene, "w", driver="JPEG", width=32, height=32, count=3, dtype="uint8") as dst:
            dst.write(np.zeros((3, 32, 32), np.uint8))
    line = user_error(invoke("infer", scene, "--out", tmp_path / "b.gpkg", "--model", tiny_bundle),
                      "photo.jpg", "a JPEG file", "accepts only GeoTIFF/COG", "gdal_translate -of COG")
    assert "not recognized" not in line and "supported file format" not in line


def test_unknown_class_did_you_mean(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    user_error(invoke("infer", make_scene(), "--out", tmp_path / "b.gpkg", "--model", tiny_bundle, "--classes",
                      "biulding"), "--classes biulding", "did you mean building?", "building, road")


def test_pickle_with_code_never_advises_weights_only_false(tmp_path: Path) -> None:
    """A checkpoint whose pickle calls os.system: refused in one line, and torch's advice is not repeated."""
    import torch

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    result = invoke("models", "import", tmp_path / "evil.pt", "--arch", "smp:Unet", "--classes", "background,b",
                    "--out", tmp_path / "m.safetensors")
    line = user_error(result, "evil.pt", "refused", "GLOBAL posix.system")
    assert "weights_only=False" not in line and "`weights_only`" not in line and "Re-running" not in line
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "m.safetensors").exists()


# --- item 10: user errors answer before torch is imported -------------------------------------------------------

HARNESS = """
import runpy, sys
sys.argv = ["geoseg", *sys.argv[1:]]
try:
    runpy.run_module("geoseg", run_name="__main__")
except SystemExit as exit:
    heavy = sorted(m for m in ("torch", "distributed", "dask", "segmentation_models_pytorch", "geopandas")
                   if m in sys.modules)
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
    raise
"""


def test_user_errors_answer_before_torch_is_imported(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    existing = tmp_path / "old.gpkg"
    existing.write_bytes(b"x")
    scene = make_scene()
    cases = {
        "missing scene": ["infer", str(tmp_path / "nowhere.tif"), "--out", str(tmp_path / "b.gpkg")],
        "existing output": ["infer", str(scene), "--out", str(existing), "--model", str(tiny_bundle)],
        "bad tiling": ["infer", str(scene), "--out", str(tmp_path / "b.gpkg"), "--tile", "-5"],
        "unknown class": ["infer", str(scene), "--out", str(tmp_path / "b.gpkg"), "--classes", "tree"],
        "output is input": ["infer", str(scene), "--raster-out", str(scene), "--overwrite"],
        "band count": ["infer", str(make_scene("four.tif", bands=4, photometric="MINISBLACK")), "--out",
                       str(tmp_path / "b.gpkg")],
        "batch input": ["batch", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")],
        "batch tiling": ["batch", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--halo", "-1"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-c", HARNESS, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, args in cases.items()}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        lines = stderr.splitlines()
        assert proc.returncode == 1, (name, stderr)
        assert len(lines) == 2 and lines[0].startswith("geoseg: error: "), (name, stderr)
        assert lines[1] == "HEAVY=", (name, lines[1])


# --- item 16: which bands feed the model ------------------------------------------------------------------------

def _rgb_bundle(tmp_path: Path) -> Path:
    """The tiny bundle, its bands named red, green, blue (as a real RGB model's are)."""
    from safetensors.numpy import load_file, save_file

    path = write_tiny_bundle(tmp_path / "rgb.safetensors")
    meta = dataclasses.replace(read_meta(path), band_names=("red", "green", "blue"))
    save_file(load_file(str(path)), str(path), metadata={"geoseg": meta.to_json()})
    return path


def _four_band_scene(make_scene: Any, name: str, labels: tuple[str, ...] | None) -> tuple[Path, np.ndarray]:
    data = (np.random.default_rng(3).random((4, 120, 160)) * 255).astype(np.uint8)
    path = make_scene(name, bands=4, width=160, height=120, data=data, photometric="MINISBLACK")
    if labels:
        with rasterio.open(path, "r+") as dst:
            for i, label in enumerate(labels, start=1):
                dst.set_band_description(i, label)
    return path, data


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_bands_option_selects_and_orders_scene_bands(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    """--bands 3,1,2 on a 4-band scene gives what the 3-band scene of those bands gives."""
    four, data = _four_band_scene(make_scene, "four.tif", None)
    three = make_scene("three.tif", bands=3, width=160, height=120, data=data[[2, 0, 1]])
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert invoke("infer", four, "--raster-out", a, "--model", tiny_bundle, *TILING, "--bands", "3,1,2",
                  "-q").exit_code == 0
    assert invoke("infer", three, "--raster-out", b, "--model", tiny_bundle, *TILING, "-q").exit_code == 0
    assert np.array_equal(_classes(a), _classes(b))
    user_error(invoke("infer", four, "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle, *TILING,
                      "--bands", "1,2,5"), "--bands 1,2,5", "only 4 band(s)")
    user_error(invoke("infer", four, "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle, *TILING,
                      "--bands", "0,1,2"), "band numbers start at 1")


def test_rgbn_scene_bands_matched_by_their_labels(make_scene: Any, tmp_path: Path) -> None:
    """A 4-band scene stored blue, green, red, NIR (labelled) runs unchanged: bands 3,2,1 are picked and it says so."""
    bundle = _rgb_bundle(tmp_path)
    bgrn, data = _four_band_scene(make_scene, "bgrn.tif", ("Blue", "Green", "Red", "NIR"))
    rgb = make_scene("rgb.tif", bands=3, width=160, height=120, data=data[[2, 1, 0]])
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    result = invoke("infer", bgrn, "--raster-out", a, "--model", bundle, *TILING, "-q")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "matched by the scene's band labels" in line]
    assert len(notes) == 1 and "3=red, 2=green, 1=blue" in notes[0], result.stderr
    assert invoke("infer", rgb, "--raster-out", b, "--model", bundle, *TILING, "-q").exit_code == 0
    assert np.array_equal(_classes(a), _classes(b))


def test_unlabelled_four_band_scene_hint_works(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    four, _ = _four_band_scene(make_scene, "four.tif", None)
    line = user_error(invoke("infer", four, "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle, *TILING),
                      "has 4 band(s)", "expects 3")
    hint = re.search(r"--bands (\S+)", line)
    assert hint, line
    assert invoke("infer", four, "--raster-out", tmp_path / "c.tif", "--model", tiny_bundle, *TILING, "--bands",
                  hint[1], "-q").exit_code == 0


def test_bands_in_a_pipeline_and_on_batch(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    four, data = _four_band_scene(make_scene, "in/four.tif", None)
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("infer:\n  bands: [4, 2, 1]\n  tile: 128\n  halo: 32\n")
    via_pipe = tmp_path / "p.tif"
    assert invoke("infer", four, "--raster-out", via_pipe, "--model", tiny_bundle, "--pipeline", pipe,
                  "-q").exit_code == 0
    out = tmp_path / "out"
    result = invoke("batch", tmp_path / "in", "--out-dir", out, "--model", tiny_bundle, *TILING, "--bands",
                    "4,2,1", "--outputs", "classes", "--workers", "1", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert np.array_equal(_classes(out / "four_classes.tif"), _classes(via_pipe))
