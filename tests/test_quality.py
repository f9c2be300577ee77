"""The bundled default model, measured on synthetic scenes no training run saw: held-out looks and seeds.

Training (pipelines/default.yaml) draws its looks from geoseg.synth.looks.TRAIN_LOOKS with seeds 1000-1095; the
scenes here use a held-out look (HELD_OUT_LOOKS) and seeds >= 4000, at a GSD the model reads resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from geoseg.evaluate_many import Pair, score_one
from geoseg.infer import infer
from geoseg.models.bundle import BUNDLED_DIR, load_bundle
from geoseg.pipeline import load_pipeline
from geoseg.synth import SynthSpec, write_scene
from geoseg.synth.looks import HELD_OUT_LOOKS

HELD_OUT_SEED = 4242  # training uses seeds 1000-1095 (pipelines/default.yaml)
ROOT = Path(__file__).resolve().parent.parent


def test_default_bundle_is_small_and_self_describing():
    path = BUNDLED_DIR / "default.safetensors"
    assert sum(p.stat().st_size for p in BUNDLED_DIR.glob("*.safetensors")) <= 30 * 1024 * 1024
    bundle = load_bundle("default")
    assert [c.name for c in bundle.meta.classes] == ["background", "building", "road"]
    assert dict(bundle.meta.heads) == {"boundary": 1}  # terraced rows are split by the boundary head
    assert bundle.meta.provenance.get("steps", 0) > 0 and path.stat().st_size > 0


def test_default_model_on_a_held_out_look(tmp_path):
    """An unseen look (nordic: dark roofs, low sun, haze) at 0.4 m, read resampled to the model's 0.5 m."""
    assert "nordic" in HELD_OUT_LOOKS
    scene, truth = tmp_path / "held_out.tif", tmp_path / "held_out_truth.gpkg"
    write_scene(SynthSpec(960, 960, seed=HELD_OUT_SEED, look="nordic", gsd=0.4), scene, truth)
    config = load_pipeline(ROOT / "pipelines" / "default.yaml")
    infer(scene, tmp_path / "pred.gpkg", config, raster_out=tmp_path / "classes.tif")
    scores = score_one(Pair("held_out", truth, tmp_path / "pred.gpkg", tmp_path / "classes.tif"))
    b, r = scores["building"], scores["road"]
    # issue 15's targets for unseen looks as floors (building IoU and object F1 >= 0.85, road IoU >= 0.80); what the
    # bundled model measures is in the README's Models section
    assert b["pixel_iou"] >= 0.85, scores
    assert r["pixel_iou"] >= 0.80, scores
    assert b["object_f1"] >= 0.85, scores
    # terraced rows come out as units: the boundary head draws the walls inside a row
    assert b["terraced"] >= 50 and b["terraced_split"] >= 0.85 * b["terraced"], scores


def _whole_image_probs(bundle_path: Path, scene: Path, tile: int, halo: int) -> np.ndarray:
    """Reference: one forward pass over the whole (reflect-padded) scene; softmax over the class channels."""
    b = load_bundle(bundle_path)
    with rasterio.open(scene) as src:
        img = src.read().astype(np.float32)
    x = (img / 255.0 - np.array(b.meta.mean, np.float32)[:, None, None]) / np.array(b.meta.std, np.float32)[:, None,
                                                                                                          None]
    core = tile - 2 * halo
    h, w = x.shape[1:]
    pad_h, pad_w = -(-h // core) * core - h, -(-w // core) * core - w
    xp = np.pad(x, ((0, 0), (halo, pad_h + halo), (halo, pad_w + halo)), mode="reflect")
    k = len(b.meta.classes)
    with torch.inference_mode():
        probs = torch.softmax(b.model(torch.from_numpy(xp[None]).float())[:, :k], 1)[0].numpy()
    return probs[:, halo:halo + h, halo:halo + w]


def test_default_model_halo_is_exact(tmp_path):
    """The bundle's recommended halo keeps tiled probabilities within 1e-3 of one whole-image pass."""
    scene = tmp_path / "s.tif"
    write_scene(SynthSpec(800, 700, seed=HELD_OUT_SEED + 1, look="arid"), scene, tmp_path / "s_truth.gpkg")
    meta = load_bundle("default").meta
    infer(scene, None, load_pipeline(ROOT / "pipelines" / "default.yaml"), prob_out=tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as src:
        probs = src.read()
    ref = _whole_image_probs(BUNDLED_DIR / "default.safetensors", scene, meta.tile, meta.halo)
    assert abs(probs - ref).max() < 1e-3
