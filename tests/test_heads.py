"""Bundles with extra output heads: classes come from the class channels only, heads get a sigmoid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from geoseg.models import BundleMeta, build_model, load_bundle, save_bundle
from geoseg.pipeline import InferConfig
from geoseg.infer import infer
from geoseg.predict import Predictor
from tests.conftest import CLASSES, TINY_ARGS


def test_extra_heads_are_split_from_classes(tmp_path: Path, make_scene) -> None:
    torch.manual_seed(3)
    args = {**TINY_ARGS, "classes": 5}
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, heads=(("boundary", 1), ("distance", 1)),
                      tile=128, halo=32)
    path = save_bundle(tmp_path / "heads.safetensors", build_model("smp:Unet", **args), meta)
    bundle = load_bundle(path)
    assert bundle.meta.heads == (("boundary", 1), ("distance", 1))
    assert bundle.meta.n_outputs == 5
    assert bundle.meta.head_slices() == {"boundary": slice(3, 4), "distance": slice(4, 5)}

    tiles = np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32)
    out = Predictor(bundle, torch.device("cpu")).predict(tiles, 1)
    assert out.shape == (2, 5, 128, 128)
    np.testing.assert_allclose(out[:, :3].sum(axis=1), 1.0, atol=1e-5)  # softmax over the classes only
    assert (out[:, 3:] > 0).all() and (out[:, 3:] < 1).all()

    scene = make_scene(width=200, height=150)
    infer(scene, None, InferConfig(model=str(path)), raster_out=tmp_path / "c.tif", prob_out=tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.count == 3
        probs = src.read()
    with rasterio.open(tmp_path / "c.tif") as src:
        classes = src.read(1)
    np.testing.assert_array_equal(classes, probs.argmax(axis=0))
