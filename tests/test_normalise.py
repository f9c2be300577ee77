"""One normalisation for training and inference: the model sees the same numbers for the same pixels, nodata
included (no train/serve skew)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from geoseg.scene import normalise, open_scene, read_block, to_unit
from geoseg.synth import SynthSpec, write_scene
from geoseg.train.config import TrainConfig
from geoseg.train.data import Region, WindowSampler, load_scene
from geoseg.train.loop import to_tensors

CLASSES = ({"name": "background"}, {"name": "building", "layer": "buildings"}, {"name": "road", "layer": "roads"})


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_training_input_equals_inference_input_nodata_included(tmp_path, dtype):
    image, truth = tmp_path / "s.tif", tmp_path / "s_truth.gpkg"
    write_scene(SynthSpec(128, 128, seed=3, dtype=dtype, nodata_border=24), image, truth)
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), classes=CLASSES, window=128, augment={},
                      min_valid=0.0, positive_fraction=0.0, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    scene = load_scene(image, cfg, labels=str(truth))
    sampler = WindowSampler([scene], [Region(0, 0, 0, 128, 128)], cfg, seed=0)  # the one 128 px window
    x, _ = to_tensors(sampler.batch(1, 1), cfg, torch.device("cpu"))
    info = open_scene(image)
    data, valid = read_block(info, cfg.band_indexes, Window.from_slices((0, 128), (0, 128), boundless=True))
    scale = {"uint8": 255.0, "uint16": 65535.0}[dtype]
    served = normalise(data, valid, scale, cfg.mean, cfg.std)  # what infer feeds the model for this tile
    assert (~valid).sum() > 128 * 10  # the nodata border is in the window
    np.testing.assert_allclose(x[0].numpy(), served, atol=1e-5)
    assert (x[0].numpy()[:, ~valid] == 0).all() and (served[:, ~valid] == 0).all()


def test_normalise_of_unit_image_equals_normalise_of_raw():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 65536, (3, 40, 50)).astype(np.uint16)
    valid = rng.random((40, 50)) > 0.2
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.2, 0.3)
    direct = normalise(raw, valid, 65535.0, mean, std)
    expected = (raw / 65535.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(direct[:, valid], expected[:, valid], atol=1e-5)
    np.testing.assert_allclose(normalise(to_unit(raw, 65535.0), valid, 1.0, mean, std), direct, atol=1e-5)
    assert (direct[:, ~valid] == 0).all()


def test_float_pixels_outside_0_1_are_clipped_as_in_training():
    raw = np.array([[[-0.5, 0.25, 2.0]]], np.float32)
    out = normalise(raw, np.ones((1, 3), bool), 1.0, (0.5,), (0.25,))
    np.testing.assert_allclose(out[0, 0], [-2.0, -1.0, 2.0])
