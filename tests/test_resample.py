"""``--resample``: a scene read at the model's GSD through a warped VRT, raster outputs back on the scene's grid."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.windows import Window
import shapely
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.infer import CLASS_NODATA, PROB_NODATA, infer
from geoseg.models import load_bundle, save_bundle
from geoseg.pipeline import InferConfig, load_pipeline
from geoseg.scene import open_scene, read_block
from tests.test_infer import geometry_set, linear_bundle

UTM = Affine(0.5, 0, 500000, 0, -0.5, 5000000)
RECTS = [(64, 80, 128, 176), (200, 300, 263, 351), (300, 40, 341, 121)]  # row0, col0, row1, col1 (scene px)


def bundle_at(path: Path, gsd: float) -> Path:
    """The exact 1x1-conv 'bright red is building' bundle of test_infer, declared at another GSD."""
    b = load_bundle(linear_bundle(path))
    return save_bundle(path, b.model, dataclasses.replace(b.meta, gsd=gsd))


def drawn(make_scene, width: int, height: int, **kwargs) -> Path:
    data = np.random.default_rng(0).integers(10, 50, (3, height, width)).astype(np.uint8)  # texture: resampling
    for r0, c0, r1, c1 in RECTS:                                                             # shows in the probs
        data[0, r0:r1, c0:c1] += 200
    return make_scene(data=data, width=width, height=height, **kwargs)


def outputs(tmp: Path, tag: str) -> tuple[Path, Path, Path]:
    return tmp / f"{tag}.gpkg", tmp / f"{tag}_cls.tif", tmp / f"{tag}_prob.tif"


def run(scene: Path, tmp: Path, tag: str, bundle: Path, **config: object):
    out, cls, prob = outputs(tmp, tag)
    return infer(scene, out, InferConfig(model=str(bundle), **config), raster_out=cls, prob_out=prob)


def truth(transform: Affine, rect: tuple[int, int, int, int]) -> shapely.Polygon:
    r0, c0, r1, c1 = rect
    return shapely.Polygon([transform * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def test_rasters_on_the_scene_grid_model_on_a_quarter_of_the_pixels(make_scene, tmp_path):
    scene = drawn(make_scene, 1024, 768, transform=UTM)
    bundle = bundle_at(tmp_path / "lin.safetensors", 1.0)
    summary = run(scene, tmp_path, "r", bundle, resample=True, block_size=256)
    assert summary.resampled == pytest.approx((0.5, 1.0))
    core = 64  # the linear bundle: 64 px tiles, no halo
    assert summary.tiles_run * 4 == math.ceil(1024 / core) * math.ceil(768 / core)  # model grid 512x384
    out, cls, prob = outputs(tmp_path, "r")
    for path, dtype, nodata, count in ((cls, "uint8", CLASS_NODATA, 1), (prob, "float32", PROB_NODATA, 3)):
        with rasterio.open(path) as src:
            assert (src.width, src.height, src.count, src.dtypes[0]) == (1024, 768, count, dtype)
            assert src.transform == UTM and src.crs == "EPSG:32631" and src.nodata == nodata
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.overviews(1)
    with rasterio.open(cls) as src:
        classes = src.read(1)
    with rasterio.open(prob) as src:
        probs = src.read()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    inside = np.zeros(classes.shape, bool)
    for r0, c0, r1, c1 in RECTS:
        inside[r0:r1, c0:c1] = True
        assert (classes[r0 + 2:r1 - 2, c0 + 2:c1 - 2] == 1).all()  # within a model pixel (2 scene px) of the edge
    near = np.zeros_like(inside)
    for r0, c0, r1, c1 in RECTS:
        near[max(r0 - 2, 0):r1 + 2, max(c0 - 2, 0):c1 + 2] = True
    assert (classes[~near] == 0).all()
    found = gpd.read_file(out, layer="buildings")
    assert len(found) == len(RECTS) and found.crs == "EPSG:32631"
    for rect in RECTS:
        expected = truth(UTM, rect)
        match = found[found.intersects(expected)]
        assert len(match) == 1
        assert match.geometry.iloc[0].hausdorff_distance(expected) <= 1.0  # one model pixel
        # area_m2 from the 1 m grid: off by at most a model pixel along the outline
        assert abs(match["area_m2"].iloc[0] - expected.area) <= expected.length * 1.0


def test_without_resample_warns_and_runs_on_the_scene_grid(make_scene, tmp_path, caplog):
    scene = drawn(make_scene, 384, 352, transform=UTM)
    bundle = bundle_at(tmp_path / "lin.safetensors", 1.0)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        summary = run(scene, tmp_path, "p", bundle)
    warnings = [r.getMessage() for r in caplog.records if r.name == "geoseg"]
    assert len(warnings) == 1 and "--resample" in warnings[0] and "0.50x the model's GSD" in warnings[0]
    assert summary.resampled is None and summary.tiles_run == 6 * 6
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        summary = run(scene, tmp_path, "r", bundle, resample=True)
    assert not [r for r in caplog.records if r.name == "geoseg"]  # resampling instead of warning
    assert summary.tiles_run == 3 * 3
    found = gpd.read_file(outputs(tmp_path, "p")[0], layer="buildings")
    for rect in RECTS:  # the plain run draws them exactly, on scene pixels
        expected = truth(UTM, rect)
        assert found[found.intersects(expected)].geometry.iloc[0].hausdorff_distance(expected) < 1e-6


def test_resample_at_the_models_gsd_is_a_no_op(make_scene, tmp_path):
    scene = drawn(make_scene, 384, 352, transform=UTM)
    assert open_scene(scene).at_resolution(0.5 * (1 + 1e-4)).native is None
    bundle = bundle_at(tmp_path / "lin.safetensors", 0.5)
    plain = run(scene, tmp_path, "a", bundle)
    same = run(scene, tmp_path, "b", bundle, resample=True)
    assert same.resampled is None and same.tiles_run == plain.tiles_run
    for a, b in zip(outputs(tmp_path, "a")[1:], outputs(tmp_path, "b")[1:]):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert x.profile == y.profile
            np.testing.assert_array_equal(x.read(), y.read())
    for layer, kind in pyogrio.list_layers(outputs(tmp_path, "a")[0]):
        if kind:
            a, b = (gpd.read_file(outputs(tmp_path, t)[0], layer=layer) for t in "ab")
            assert geometry_set(a) == geometry_set(b) and len(a) == (len(RECTS) if layer == "buildings" else 0)


@pytest.mark.parametrize("kind", ["nodata", "internal-mask", "alpha"])
def test_masks_keep_their_meaning_on_the_model_grid(kind, make_scene):
    bands = 4 if kind == "alpha" else 3
    data = np.random.default_rng(1).integers(1, 255, (bands, 96, 128)).astype(np.uint8)
    mask = np.full((96, 128), 255, np.uint8)
    mask[20:60, 32:90] = 0  # even edges: whole model pixels at half the resolution
    if kind == "alpha":
        data[3] = mask
    if kind == "nodata":
        data[:, mask == 0] = 0
    path = make_scene(data=data, width=128, height=96, bands=bands, nodata=0 if kind == "nodata" else None)
    if kind == "internal-mask":
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
            dst.write_mask(mask)
    info = open_scene(path).at_resolution(1.0)
    assert (info.width, info.height, info.transform) == (64, 48, UTM * Affine.scale(2))
    # past the top and bottom: reflected
    got, valid = read_block(info, (1, 2, 3), Window.from_slices((-4, 52), (0, 64), boundless=True))
    assert got.shape == (3, 56, 64)
    expected = np.pad(mask[::2, ::2] > 0, ((4, 4), (0, 0)), mode="reflect")
    assert np.array_equal(valid, expected)


def test_processes_scheduler_matches_threads(make_scene, tmp_path):
    scene = drawn(make_scene, 384, 352, transform=UTM)
    bundle = bundle_at(tmp_path / "lin.safetensors", 1.0)
    run(scene, tmp_path, "t", bundle, resample=True, block_size=4096, workers=1)  # one block vs 3x3
    run(scene, tmp_path, "p", bundle, resample=True, block_size=64, workers=1, scheduler="processes")
    for a, b in zip(outputs(tmp_path, "t")[1:], outputs(tmp_path, "p")[1:]):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert (y.width, y.height) == (384, 352)
            np.testing.assert_array_equal(x.read(), y.read())
    a, b = (gpd.read_file(outputs(tmp_path, t)[0], layer="buildings") for t in "tp")
    assert len(a) == len(RECTS) and geometry_set(a) == geometry_set(b)


def test_geographic_scene(make_scene, tmp_path):
    transform = Affine(5e-6, 0, 2.0, 0, -5e-6, 48.0)
    scene = drawn(make_scene, 384, 352, crs="EPSG:4326", transform=transform)
    info = open_scene(scene)
    bundle = bundle_at(tmp_path / "lin.safetensors", 2 * info.gsd_m)  # half the scene's resolution, in metres
    summary = run(scene, tmp_path, "g", bundle, resample=True)
    assert summary.resampled == pytest.approx((info.gsd_m, 2 * info.gsd_m))
    assert info.at_resolution(2 * info.gsd_m).transform == transform * Affine.scale(2)  # degrees per pixel doubled
    out, cls, _ = outputs(tmp_path, "g")
    with rasterio.open(cls) as src:
        assert (src.width, src.height, src.transform, src.crs) == (384, 352, transform, "EPSG:4326")
    found = gpd.read_file(out, layer="buildings")
    assert len(found) == len(RECTS) and found.crs == "EPSG:4326"
    for rect in RECTS:
        expected = truth(transform, rect)
        match = found[found.intersects(expected)]
        assert match.geometry.iloc[0].hausdorff_distance(expected) <= 2 * 5e-6  # one model pixel, in degrees
        r0, c0, r1, c1 = rect
        area = (r1 - r0) * (c1 - c0) * info.gsd_m**2  # area_m2 in square metres, not degrees
        assert abs(match["area_m2"].iloc[0] / area - 1) < 0.15


def test_cli_resample(make_scene, tmp_path):
    scene = drawn(make_scene, 384, 352, transform=UTM)
    bundle = bundle_at(tmp_path / "lin.safetensors", 1.0)
    cls = tmp_path / "c.tif"
    args = ["infer", scene, "--model", bundle, "--raster-out", cls, "--out", tmp_path / "b.gpkg", "--resample"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert not [line for line in lines if "warning" in line]
    assert "resampled from 0.5 m to 1 m" in lines[-1] and "3 buildings" in lines[-1]
    with rasterio.open(cls) as src:
        assert (src.width, src.height, src.transform) == (384, 352, UTM)
    assert "--resample" in CliRunner().invoke(main, ["batch", "--help"]).output


def test_pipeline_key(tmp_path):
    (tmp_path / "p.yaml").write_text("infer:\n  resample: true\n")
    assert load_pipeline(tmp_path / "p.yaml").resample is True
    assert InferConfig().resample is False
