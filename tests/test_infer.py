"""End-to-end invariants of ``infer``: partition invariance, halo exactness, georeferencing, outputs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from geoseg.infer import CLASS_NODATA, PROB_NODATA, infer
from geoseg.models import BundleMeta, build_model, load_bundle, save_bundle
from geoseg.pipeline import ClassPost, InferConfig
from tests.conftest import CLASSES


def run(scene: Path, tmp: Path, tag: str, bundle: Path, **config: object) -> tuple[np.ndarray, np.ndarray, dict]:
    """Infer with every output; return (probs, classes, {layer: GeoDataFrame})."""
    out, cls, prob = tmp / f"{tag}.gpkg", tmp / f"{tag}_cls.tif", tmp / f"{tag}_prob.tif"
    keep_all = {name: ClassPost(min_area_m2=0.0) for name in ("building", "road")}  # untrained model: tiny blobs
    infer(scene, out, InferConfig(model=str(bundle), post=keep_all, **config), raster_out=cls, prob_out=prob)
    with rasterio.open(prob) as src:
        p = src.read()
    with rasterio.open(cls) as src:
        c = src.read(1)
    layers = {name: gpd.read_file(out, layer=name) for name, kind in pyogrio.list_layers(out) if kind}
    return p, c, layers


def geometry_set(frame: gpd.GeoDataFrame) -> list[bytes]:
    return sorted(shapely.to_wkb(shapely.normalize(frame.geometry.values)))


@pytest.mark.slow
def test_partition_invariance(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=420, height=330)
    base = run(scene, tmp_path, "a", tiny_bundle, block_size=64, workers=1)
    for tag, cfg in {"b": dict(block_size=200, workers=2),
                     "c": dict(block_size=4096, workers=2),
                     "d": dict(block_size=128, workers=2, scheduler="processes")}.items():
        other = run(scene, tmp_path, tag, tiny_bundle, **cfg)
        np.testing.assert_array_equal(other[0], base[0], err_msg=f"probabilities differ for {cfg}")
        np.testing.assert_array_equal(other[1], base[1], err_msg=f"classes differ for {cfg}")
        for layer in base[2]:
            assert len(base[2][layer]) > 0
            assert geometry_set(other[2][layer]) == geometry_set(base[2][layer]), (layer, cfg)
            np.testing.assert_allclose(np.sort(other[2][layer]["score"]), np.sort(base[2][layer]["score"]))


def whole_image_probs(bundle: Path, scene: Path, tile: int, halo: int) -> np.ndarray:
    """Reference: one forward pass over the whole (reflect-padded) scene."""
    b = load_bundle(bundle)
    with rasterio.open(scene) as src:
        img = src.read().astype(np.float32)
    x = (img / 255.0 - 0.5) / 0.25
    core = tile - 2 * halo
    h, w = x.shape[1:]
    pad_h, pad_w = -(-h // core) * core - h, -(-w // core) * core - w
    xp = np.pad(x, ((0, 0), (halo, pad_h + halo), (halo, pad_w + halo)), mode="reflect")
    with torch.inference_mode():
        probs = torch.softmax(b.model(torch.from_numpy(xp[None])), 1)[0].numpy()
    return probs[:, halo:halo + h, halo:halo + w]


def test_halo_exactness(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=400, height=300)
    probs, _, _ = run(scene, tmp_path, "h", tiny_bundle, tile=256, halo=64, block_size=128)
    ref = whole_image_probs(tiny_bundle, scene, 256, 64)
    assert np.abs(probs - ref).max() < 1e-3
    # too little context is visible: the check above is not vacuous
    probs0, _, _ = run(scene, tmp_path, "h0", tiny_bundle, tile=128, halo=0, block_size=128)
    assert np.abs(probs0 - ref).max() > 1e-3


def linear_bundle(path: Path, bands: int = 3) -> Path:
    """A 1x1-conv 'model' that calls bright red pixels building: exact, so geometry can be checked exactly."""
    model = build_model("pixel-linear", in_channels=bands, classes=3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, -8.0, -50.0]))
        model.weight[1, 0] = 10.0  # building logit = 10*x_red - 8 (x_red ≈ +2 for bright, -2 for dark)
    meta = BundleMeta(arch="pixel-linear", arch_args={"in_channels": bands, "classes": 3}, classes=CLASSES,
                      band_names=("r", "g", "b")[:bands], band_indexes=tuple(range(1, bands + 1)),
                      tile=64, halo=0, stride=1)
    return save_bundle(path, model, meta)


@pytest.mark.parametrize("crs,transform", [
    ("EPSG:32631", Affine(0.5, 0, 500000, 0, -0.5, 5000000)),
    ("EPSG:4326", Affine(5e-6, 0, 2.0, 0, -5e-6, 48.0)),
    ("EPSG:32631", Affine.translation(500000, 5000000) @ Affine.rotation(20) @ Affine.scale(0.5, -0.5)),
], ids=["utm", "geographic", "rotated"])
def test_georeferencing_round_trip(make_scene, tmp_path, crs, transform):
    data = np.full((3, 150, 170), 10, np.uint8)
    rects = [(20, 30, 45, 70), (60, 120, 100, 160), (110, 5, 140, 25)]  # row0, col0, row1, col1
    for r0, c0, r1, c1 in rects:
        data[0, r0:r1, c0:c1] = 250
    scene = make_scene(data=data, width=170, height=150, crs=crs, transform=transform)
    out = tmp_path / "b.gpkg"
    infer(scene, out, InferConfig(model=str(linear_bundle(tmp_path / "lin.safetensors")), block_size=64))
    found = gpd.read_file(out, layer="buildings")
    assert found.crs == rasterio.crs.CRS.from_user_input(crs)
    assert len(found) == len(rects)
    pixel = abs(transform.a) if transform.b == 0 else 0.5
    for r0, c0, r1, c1 in rects:
        corners = [transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
        truth = shapely.Polygon(corners)
        match = found[found.intersects(truth)]
        assert len(match) == 1
        geom = match.geometry.iloc[0]
        assert geom.hausdorff_distance(truth) <= pixel  # lands on its pixels within one pixel
        assert match["area_m2"].iloc[0] > 0
    if crs == "EPSG:4326":  # area_m2 in metres even for degrees: 25x40 px at ~0.37x0.56 m
        assert 100 < found["area_m2"].max() < 2000


def test_nodata_is_honoured(make_scene, tmp_path):
    data = np.full((3, 100, 120), 10, np.uint8)
    data[0, 20:60, 20:100] = 250
    data[:, :, :64] = 0  # nodata region cuts the bright rectangle and covers whole tiles
    data[:, 70:, :] = 0
    scene = make_scene(data=data, width=120, height=100, nodata=0)
    out, cls, prob = tmp_path / "o.gpkg", tmp_path / "c.tif", tmp_path / "p.tif"
    summary = infer(scene, out, InferConfig(model=str(linear_bundle(tmp_path / "l.safetensors")), tile=64,
                                            block_size=64), raster_out=cls, prob_out=prob)
    with rasterio.open(cls) as src:
        c = src.read(1)
        assert src.nodata == CLASS_NODATA
    with rasterio.open(prob) as src:
        p = src.read()
    assert (c[:, :64] == CLASS_NODATA).all() and (c[70:] == CLASS_NODATA).all()
    assert (p[:, :, :64] == PROB_NODATA).all()
    assert (c[20:60, 64:100] == 1).all() and (c[:70, 64:] != CLASS_NODATA).all()
    found = gpd.read_file(out, layer="buildings")
    assert len(found) == 1
    assert found.total_bounds[0] == 500000 + 64 * 0.5  # the polygon stops where nodata starts
    assert summary.tiles_run == 2  # of 2x2 tiles (64 px cores in 120x100), the two all-nodata ones skipped


def test_scene_smaller_than_a_tile(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=37, height=23)
    probs, classes, _ = run(scene, tmp_path, "s", tiny_bundle, tile=256, halo=64)
    assert probs.shape == (3, 23, 37)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype,scale", [("uint16", 65535), ("float32", 1.0)])
def test_dtypes_normalised_like_uint8(make_scene, tiny_bundle, tmp_path, dtype, scale):
    base = (np.random.default_rng(3).random((3, 90, 110)) * 255).astype(np.uint8)
    a = make_scene("a.tif", data=base, width=110, height=90)
    b = make_scene("b.tif", data=(base.astype(np.float64) / 255 * scale).astype(dtype), width=110, height=90,
                   dtype=dtype)
    pa, _, _ = run(a, tmp_path, "a", tiny_bundle)
    pb, _, _ = run(b, tmp_path, "b", tiny_bundle)
    np.testing.assert_allclose(pa, pb, atol=1e-4)


def test_outputs_are_valid_cogs_and_gpkg(make_scene, tiny_bundle, tmp_path):
    scene = make_scene(width=700, height=600)
    run(scene, tmp_path, "o", tiny_bundle, block_size=256)
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    for name, dtype in (("o_cls.tif", "uint8"), ("o_prob.tif", "float32")):
        with rasterio.open(tmp_path / name) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.profile["tiled"] and src.compression is not None
            assert src.overviews(1), "COG has overviews"
            assert src.crs == crs and src.transform == transform and src.dtypes[0] == dtype
            assert src.nodata is not None
    layers = dict(pyogrio.list_layers(tmp_path / "o.gpkg"))
    assert layers == {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString",
                      "layer_styles": None}
    frame = gpd.read_file(tmp_path / "o.gpkg", layer="buildings")
    assert {"class", "area_m2", "score"} <= set(frame.columns)
    assert frame.is_valid.all() and frame.crs == crs
    assert not list(tmp_path.glob(".*tmp*"))


def test_object_cut_by_block_edges_is_one_polygon(make_scene, tmp_path):
    data = np.full((3, 200, 200), 10, np.uint8)
    data[0, 40:150, 30:170] = 250            # spans 3x3 blocks of 64 px, crossing four block corners
    data[0, 60:80, 60:140] = 10              # a hole inside it
    scene = make_scene(data=data, width=200, height=200)
    out = tmp_path / "one.gpkg"
    infer(scene, out, InferConfig(model=str(linear_bundle(tmp_path / "l.safetensors")), block_size=64,
                                  workers=2))
    found = gpd.read_file(out, layer="buildings")
    assert len(found) == 1
    geom = found.geometry.iloc[0]
    assert geom.geom_type == "Polygon" and len(geom.interiors) == 1
    assert found["area_m2"].iloc[0] == pytest.approx((110 * 140 - 20 * 80) * 0.25)
    assert len(shapely.get_coordinates(geom)) == 10  # 5 + 5 ring vertices: no seam vertices left behind
