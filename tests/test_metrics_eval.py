"""Evaluation metrics on hand-built cases; every expected value is worked out by hand in the comments."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from shapely import LineString, box

from geoseg.cli import main
from geoseg.evaluate import evaluate, seam_disagreement
from geoseg.metrics import apls, line_scores, object_scores
from geoseg.models import BundleMeta, build_model, save_bundle
from tests.conftest import CLASSES, write_tiny_bundle

X0, Y0 = 500_000.0, 5_000_000.0
TRUTH = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]  # three 10 x 10 m houses (area 100)
BUILDINGS = ({"name": "background"}, {"name": "building", "layer": "buildings"})


def test_object_metric_cases_by_hand():
    s = object_scores(TRUTH, TRUTH)  # perfect: 3 of 3 matched, P = R = F1 = 1
    assert (s["matched"], s["precision"], s["recall"], s["f1"]) == (3, 1.0, 1.0, 1.0)
    # shifted: house 1 moved 2 m: overlap 8 x 10 = 80, union 100 + 100 - 80 = 120, IoU 0.67 >= 0.5 (match);
    # house 2 moved 6 m: overlap 40, union 160, IoU 0.25 (no match); house 3 exact. 2 matched of 3 and 3:
    # P = R = F1 = 2/3
    s = object_scores([box(2, 0, 12, 10), box(26, 0, 36, 10), TRUTH[2]], TRUTH)
    assert s["matched"] == 2 and s["precision"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)
    # dropped: only houses 1 and 2 predicted: P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    s = object_scores(TRUTH[:2], TRUTH)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, pytest.approx(2 / 3), pytest.approx(0.8))
    # split: house 1 as two pieces, 10 x 6 (IoU 60/100 = 0.6, match) and 10 x 4 (IoU 0.4, no match), plus
    # houses 2 and 3: 3 matched of 4 predicted and 3 true: P = 3/4, R = 1, F1 = 2 * 0.75 / 1.75 = 6/7
    s = object_scores([box(0, 0, 10, 6), box(0, 6, 10, 10)] + TRUTH[1:], TRUTH)
    assert (s["matched"], s["precision"], s["recall"]) == (3, 0.75, 1.0) and s["f1"] == pytest.approx(6 / 7)
    # merged: one 30 x 10 blob over houses 1 and 2 (IoU 100/300 = 1/3 with each: no match) plus house 3:
    # 1 matched of 2 predicted and 3 true: P = 1/2, R = 1/3, F1 = 2 * (1/6) / (5/6) = 0.4
    s = object_scores([box(0, 0, 30, 10), TRUTH[2]], TRUTH)
    assert (s["matched"], s["precision"]) == (1, 0.5) and s["f1"] == pytest.approx(0.4)
    # one-to-one: two predictions over house 1 (IoU 1.0 and 0.9) match it once: P = 1/2, R = 1/3
    s = object_scores([TRUTH[0], box(0, 0, 10, 9)], TRUTH)
    assert s["matched"] == 1 and s["precision"] == 0.5


def _gpkg(path, geoms, layer="buildings", crs="EPSG:32631"):
    frame = gpd.GeoDataFrame(geometry=[g for g in geoms], crs="EPSG:32631")
    frame.geometry = frame.geometry.translate(X0, Y0)
    frame.to_crs(crs).to_file(path, layer=layer, driver="GPKG")
    return path


def test_pixel_and_object_metrics_from_vectors_and_rasters(tmp_path):
    truth = _gpkg(tmp_path / "truth.gpkg", TRUTH)
    # prediction: house 1 shifted 2 m east, house 2 missing, house 3 exact (stored in WGS84: reprojected)
    pred = _gpkg(tmp_path / "pred.gpkg", [box(2, 0, 12, 10), TRUTH[2]], crs="EPSG:4326")
    s = evaluate(pred, truth, classes=BUILDINGS, resolution=1.0)["building"]
    # 1 m pixels: truth 300 px, prediction 200 px, overlap 80 + 100 = 180 (reprojection moves edges by far less
    # than a pixel, which can flip a few edge pixels: 1 % tolerance) -> IoU 180 / (300 + 200 - 180) = 0.5625,
    # precision 180 / 200 = 0.9, recall 180 / 300 = 0.6
    assert s["pixel_iou"] == pytest.approx(0.5625, rel=0.01)
    assert s["pixel_precision"] == pytest.approx(0.9, rel=0.01) and s["pixel_recall"] == pytest.approx(0.6, rel=0.01)
    # objects: house 1 IoU 80/120 (match), house 3 exact: 2 matched of 2 predicted, 3 true -> F1 = 0.8
    assert s["object_matched"] == 2 and s["object_f1"] == pytest.approx(0.8)
    # the same prediction as a class raster (1 m pixels, one pixel of nodata = 255 that is not counted)
    raster = tmp_path / "pred.tif"
    data = np.zeros((12, 52), np.uint8)
    data[1:11, 3:13] = 1   # x 2..12 m (the grid starts at x = -1 m), y 0..10 m
    data[1:11, 41:51] = 1  # house 3
    data[0, 0] = 255
    with rasterio.open(raster, "w", driver="GTiff", width=52, height=12, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32631", transform=Affine(1, 0, X0 - 1, 0, -1, Y0 + 11)) as dst:
        dst.write(data[None])
    r = evaluate(raster, truth, classes=BUILDINGS)["building"]
    assert (r["pixel_iou"], r["pixel_precision"], r["pixel_recall"]) == (0.5625, 0.9, 0.6)  # exact on this grid


def test_apls_by_hand():
    line1 = np.zeros((60, 100), bool)
    line1[10, :] = True  # a straight road, 99 px end to end
    assert apls(line1, line1)["apls"] == 1.0
    assert apls(np.zeros_like(line1), line1)["apls"] == 0.0
    gap = line1.copy()
    gap[10, 50:52] = False
    s = apls(gap, line1)
    # truth -> prediction: the one trip (end to end, both ways) has no path across the gap: 0.
    # prediction -> truth: trips inside each piece (0..49, 52..99) exist in the truth with the same length: 1.
    # APLS = harmonic mean of 0 and 1 = 0: a cut road breaks every route across it
    assert (s["apls_truth_to_pred"], s["apls_pred_to_truth"], s["apls"]) == (0.0, 1.0, 0.0)
    two = line1.copy()
    two[50, :] = True  # a second, separate road 40 px away
    s = apls(line1, two)
    # truth -> prediction: 4 directed trips (2 per road); road 1's are exact (1, 1); road 2's ends are 40 px from
    # any predicted pixel (> snap 8): 0, 0 -> 2/4 = 0.5. prediction -> truth: road 1's trips exist: 1.
    # APLS = 2 * 0.5 * 1 / 1.5 = 2/3
    assert s["apls_truth_to_pred"] == 0.5 and s["apls_pred_to_truth"] == 1.0
    assert s["apls"] == pytest.approx(2 / 3)


def test_centerline_scores_by_hand(tmp_path):
    truth = [LineString([(0, 0), (100, 0)])]
    # 50 m along the truth, 0.5 m off it; 20 m that is 5 m off
    pred = [LineString([(0, 0.5), (50, 0.5)]), LineString([(60, 5), (80, 5)])]
    s = line_scores(np.array(pred), np.array(truth), 1.0)
    assert s["completeness"] == pytest.approx(0.5, abs=0.01)       # 50 of the true 100 m have a line within 1 m
    assert s["correctness"] == pytest.approx(50 / 70, abs=0.01)    # 50 of the predicted 70 m lie near the truth
    assert s["f1"] == pytest.approx(2 * 0.5 * (50 / 70) / (0.5 + 50 / 70), abs=0.01)
    assert line_scores(np.array(pred), np.array(truth), 6.0)["correctness"] == pytest.approx(1.0)
    # through evaluate: files with a road_centerlines layer on both sides (truth in another CRS), roads as well
    roads = [box(0, -4, 100, 4)]
    for name, lines in (("truth", truth), ("pred", pred)):
        path = _gpkg(tmp_path / f"{name}.gpkg", roads, layer="roads", crs="EPSG:4326" if name == "truth" else
                     "EPSG:32631")
        _gpkg(path, lines, layer="road_centerlines", crs="EPSG:4326" if name == "truth" else "EPSG:32631")
    road = evaluate(tmp_path / "pred.gpkg", tmp_path / "truth.gpkg", resolution=1.0,
                    classes=({"name": "background"}, {"name": "road", "layer": "roads"}))["road"]
    assert road["centerline_completeness_1m"] == pytest.approx(0.5, abs=0.02)
    assert road["centerline_correctness_2m"] == pytest.approx(50 / 70, abs=0.02)


def test_seam_qa_is_zero_for_a_per_pixel_model(tmp_path, make_scene):
    scene = make_scene(width=200, height=150)
    model = build_model("pixel-linear", in_channels=3, classes=3)
    meta = BundleMeta(arch="pixel-linear", arch_args={"in_channels": 3, "classes": 3}, classes=CLASSES, tile=64,
                      halo=8, stride=1)
    linear = save_bundle(tmp_path / "linear.safetensors", model, meta)
    s = seam_disagreement(scene, str(linear))
    # a 1x1 convolution sees no context: overlapping tiles agree exactly; 4 x 5 tiles of 48 px cores
    assert s["seam_disagreement"] == 0.0 and s["seam_max_prob_diff"] < 1e-6 and s["seam_pixels_compared"] > 0
    unet = write_tiny_bundle(tmp_path / "unet.safetensors", tile=128, halo=32)
    assert seam_disagreement(scene, str(unet))["seam_max_prob_diff"] > 1e-3  # context matters to a U-Net


def test_eval_cli_prints_json_and_a_table(tmp_path):
    truth = _gpkg(tmp_path / "truth.gpkg", TRUTH)
    pred = _gpkg(tmp_path / "pred.gpkg", TRUTH[:2])
    res = CliRunner().invoke(main, ["eval", "--pred", str(pred), "--truth", str(truth), "--classes", "building",
                                    "--resolution", "1", "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout.strip().splitlines()[0])
    assert scores["building"]["object_recall"] == pytest.approx(0.6667, abs=1e-4)
    assert json.loads((tmp_path / "s.json").read_text()) == scores
    assert "object F1" in res.stderr and "building" in res.stderr
    bad = CliRunner().invoke(main, ["eval", "--pred", str(tmp_path / "none.gpkg"), "--truth", str(truth)])
    assert bad.exit_code == 1 and "none.gpkg" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
