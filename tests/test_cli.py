"""The CLI through click's runner and through a real subprocess; every pipeline YAML loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.pipeline import load_pipeline
from geoseg.train import load_train_config

ROOT = Path(__file__).resolve().parent.parent


def test_infer_via_click_runner(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=260, height=190)
    out = tmp_path / "o.gpkg"
    args = ["infer", str(scene), "--out", str(out), "--model", str(tiny_bundle), "--raster-out",
            str(tmp_path / "c.tif"), "--classes", "building", "--tile", "128", "--halo", "32", "--batch-size", "2",
            "--block-size", "128", "--workers", "2", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert "buildings" in summary and "Mpx/s" in summary and "km²" in summary
    assert [name for name, kind in pyogrio.list_layers(out) if kind] == ["buildings"]  # + layer_styles
    with rasterio.open(tmp_path / "c.tif") as src:
        assert (src.width, src.height) == (260, 190)
    # a second run refuses to replace, then replaces with --overwrite
    assert CliRunner().invoke(main, args).exit_code == 1
    assert CliRunner().invoke(main, args + ["--overwrite"]).exit_code == 0


def test_overlap_is_twice_the_halo(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=150, height=140)
    outs = []
    for flag, value in (("--halo", "32"), ("--overlap", "64")):
        out = tmp_path / f"p{flag}.tif"
        res = CliRunner().invoke(main, ["infer", str(scene), "--prob-out", str(out), "--model", str(tiny_bundle),
                                        "--tile", "128", flag, value, "-q"])
        assert res.exit_code == 0, res.output
        with rasterio.open(out) as src:
            outs.append(src.read())
    assert (outs[0] == outs[1]).all()


@pytest.mark.slow
def test_infer_in_a_subprocess_is_quiet_without_tty(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=200, height=150)
    out = tmp_path / "s.gpkg"
    cmd = [sys.executable, "-m", "geoseg", "infer", str(scene), "--out", str(out), "--model", str(tiny_bundle)]
    quiet = subprocess.run(cmd + ["-q"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    loud = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    lines = loud.stderr.strip().splitlines()
    # no progress bar without a TTY: the plan before work, progress lines, then one summary line
    assert lines[0].startswith(f"geoseg: {scene}: 200x150 px") and "tiles" in lines[0] and "blocks" in lines[0]
    assert all(line.startswith("geoseg: infer: ") for line in lines[1:-1]), lines
    assert lines[-1].startswith("scene ") and "Mpx/s" in lines[-1]
    assert out.exists()


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_pipeline_loads(path):
    config = load_pipeline(path)
    assert config.scheduler in ("threads", "processes") or config.scheduler.startswith("tcp://")
    text = path.read_text()
    if "\ntrain:" in text:
        assert load_train_config(path).steps > 0


@pytest.mark.parametrize("text,needle", [
    ("infer:\n  block_size: big\n", "infer.block_size: should be a valid integer"),
    ("infer:\n  tiles: 3\n", "unknown key tiles; did you mean tile?"),
    ("infer:\n  post:\n    building: {min_area: 3}\n", "infer.post.building: unknown key min_area"),
    ("train:\n  out: x.safetensors\n  steps: many\n", "train.steps: should be a valid integer"),
    ("infer: [\n", "not valid YAML"),
])
def test_bad_pipeline_fails_in_one_line(tmp_path, text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    from geoseg.errors import ConfigError

    with pytest.raises(ConfigError, match=None) as err:
        load_train_config(bad) if "train" in text else load_pipeline(bad)
    assert needle in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value)


def test_bench_infer_prints_json(tiny_bundle, tmp_path):
    import json

    res = CliRunner().invoke(main, ["bench", "infer", "--size", "300", "--model", str(tiny_bundle),
                                    "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["tiles"] > 0 and report["wall_s"] > 0 and report["model_only_s"] > 0
    assert report["efficiency"] == pytest.approx(report["model_only_s"] / report["wall_s"], abs=0.05)
    assert {"read", "predict", "stitch", "vectorize", "write", "finalize"} <= set(report["stage_s"])
    assert report["peak_rss_mb"] > 0


@pytest.mark.slow
def test_bench_baseline_is_the_same_work(tiny_bundle, make_scene, tmp_path):
    """The plain loop the bench compares against computes what infer computes (away from the scene edges, where
    it zero-fills and infer reflects), and the bench reports it beside infer's figures."""
    import json

    import torch

    from geoseg.baseline import plain_loop
    from geoseg.infer import infer
    from geoseg.models.bundle import load_bundle
    from geoseg.pipeline import InferConfig

    scene = make_scene(width=300, height=200)
    seconds, tiles = plain_loop(scene, tmp_path / "loop.tif", load_bundle(tiny_bundle), 128, 32, 2,
                                torch.device("cpu"))
    infer(scene, None, InferConfig(model=str(tiny_bundle)), raster_out=tmp_path / "infer.tif")
    with rasterio.open(tmp_path / "loop.tif") as a, rasterio.open(tmp_path / "infer.tif") as b:
        loop, ours = a.read(1), b.read(1)
    assert tiles == 5 * 4 and seconds > 0
    inside = (slice(64, 128), slice(64, 256))  # tile cores whose whole input window lies inside the scene
    assert (loop[inside] == ours[inside]).mean() > 0.999
    assert len(np.unique(ours[inside])) > 1  # a random model: the comparison is not of two constant rasters

    # twice, each run in its own process: every report and the medians
    res = CliRunner().invoke(main, ["bench", "infer", "--size", "300", "--model", str(tiny_bundle), "--no-vectors",
                                    "--baseline", "--repeat", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["runs"] == 2 and len(report["reports"]) == 2
    base = report["reports"][1]["baseline"]
    # (the JSON rounds seconds to 10 ms: on this tiny scene the ratio of the rounded figures is only close)
    assert base["tiles"] > 0 and base["efficiency"] == pytest.approx(base["model_only_s"] / base["wall_s"], abs=0.05)
    walls = sorted(r["wall_s"] for r in report["reports"])
    assert report["median"]["wall_s"] == pytest.approx(sum(walls) / 2, abs=0.01)
    assert set(report["median_baseline"]) >= {"wall_s", "efficiency"}


def test_bench_repeat_reports_a_run_error_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["bench", "infer", "--size", "64", "--model", str(tmp_path / "none.safetensors"),
                                    "--no-vectors", "--repeat", "2", "--workdir", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [f"geoseg: error: {tmp_path / 'none.safetensors'}: bundle not found; "
                                               "check the path, or give a registered model (default)"]
