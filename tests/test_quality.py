"""The bundled default model, measured on a synthetic scene it was not trained on (seed 4242)."""

from __future__ import annotations

from pathlib import Path

import rasterio

from geoseg.evaluate import score_prediction
from geoseg.infer import infer
from geoseg.models.bundle import BUNDLED_DIR, load_bundle
from geoseg.pipeline import load_pipeline
from geoseg.synth import SynthSpec, write_scene
from tests.test_infer import whole_image_probs

HELD_OUT_SEED = 4242  # training uses seeds 1000-1007 (pipelines/default.yaml)
ROOT = Path(__file__).resolve().parent.parent


def test_default_bundle_is_small_and_self_describing():
    path = BUNDLED_DIR / "default.safetensors"
    assert path.stat().st_size <= 25 * 1024 * 1024
    bundle = load_bundle("default")
    assert [c.name for c in bundle.meta.classes] == ["background", "building", "road"]
    assert bundle.meta.provenance.get("steps", 0) > 0


def test_default_model_building_iou_on_held_out_scene(tmp_path):
    scene, truth = tmp_path / "held_out.tif", tmp_path / "held_out_truth.gpkg"
    write_scene(SynthSpec(768, 768, seed=HELD_OUT_SEED), scene, truth)
    config = load_pipeline(ROOT / "pipelines" / "default.yaml")
    infer(scene, tmp_path / "pred.gpkg", config, raster_out=tmp_path / "classes.tif")
    scores = score_prediction(tmp_path / "classes.tif", truth, tmp_path / "pred.gpkg")
    assert scores["building"]["pixel_iou"] >= 0.8, scores
    assert scores["road"]["pixel_iou"] >= 0.6, scores
    # touching houses still merge into one polygon (no instance split yet), which caps the object F1
    assert scores["building"]["object_f1"] >= 0.4, scores


def test_default_model_halo_is_exact(tmp_path):
    """The bundle's recommended halo keeps tiled probabilities within 1e-3 of one whole-image pass."""
    scene = tmp_path / "s.tif"
    write_scene(SynthSpec(800, 700, seed=HELD_OUT_SEED + 1), scene, tmp_path / "s_truth.gpkg")
    meta = load_bundle("default").meta
    infer(scene, None, load_pipeline(ROOT / "pipelines" / "default.yaml"), prob_out=tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as src:
        probs = src.read()
    ref = whole_image_probs(BUNDLED_DIR / "default.safetensors", scene, meta.tile, meta.halo)
    assert abs(probs - ref).max() < 1e-3
