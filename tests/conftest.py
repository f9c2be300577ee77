"""Shared fixtures: generated georeferenced scenes and a tiny untrained bundle (fast on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoseg.models import BundleMeta, ClassInfo, build_model, save_bundle

CLASSES = (ClassInfo("background"), ClassInfo("building", "buildings", "#e31a1c"),
           ClassInfo("road", "roads", "#636363"))
TINY_ARGS = dict(encoder_name="tu-mobilenetv2_035", encoder_depth=3, decoder_channels=(16, 8, 8), classes=3,
                 in_channels=3)


def write_tiny_bundle(path: Path, *, bands: int = 3, tile: int = 128, halo: int = 32, seed: int = 0) -> Path:
    """An untrained but real smp U-Net; its weights are random, so outputs vary pixel to pixel."""
    torch.manual_seed(seed)
    args = {**TINY_ARGS, "in_channels": bands}
    model = build_model("smp:Unet", **args)
    names = tuple(f"b{i}" for i in range(1, bands + 1))
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, band_names=names,
                      band_indexes=tuple(range(1, bands + 1)), mean=(0.5,) * bands, std=(0.25,) * bands,
                      tile=tile, halo=halo, stride=32)
    return save_bundle(path, model, meta)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny.safetensors")


SceneFactory = Callable[..., Path]


@pytest.fixture
def make_scene(tmp_path: Path) -> SceneFactory:
    """Write a small GeoTIFF: random texture with a bright rectangle; options for dtype, CRS, nodata..."""

    def make(name: str = "scene.tif", *, width: int = 300, height: int = 200, bands: int = 3,
             dtype: str = "uint8", crs: str | None = "EPSG:32631",
             transform: Affine | None = Affine(0.5, 0, 500000, 0, -0.5, 5000000), nodata: float | None = None,
             seed: int = 0, data: np.ndarray | None = None, **profile: object) -> Path:
        rng = np.random.default_rng(seed)
        if data is None:
            data = rng.random((bands, height, width)) * 0.3
            data[:, height // 4:height // 2, width // 3:2 * width // 3] += 0.6
            scale = {"uint8": 255, "uint16": 65535}.get(dtype, 1.0)
            data = (data * scale).astype(dtype)
        path = tmp_path / name
        kwargs: dict = dict(driver="GTiff", width=width, height=height, count=bands, dtype=dtype, tiled=True,
                            blockxsize=64, blockysize=64)
        if crs is not None:
            kwargs["crs"] = crs
        if transform is not None:
            kwargs["transform"] = transform
        if nodata is not None:
            kwargs["nodata"] = nodata
        kwargs.update(profile)
        with rasterio.open(path, "w", **kwargs) as dst:
            dst.write(data)
        return path

    return make
