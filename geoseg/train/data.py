"""Random training windows read from scenes, labels rasterised per window from vectors on the fly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.synth import label_window
from geoseg.vectorize import apply_affine
from geoseg.train.config import TrainConfig


@dataclass
class LabelledScene:
    """A scene path and its vector labels (per class layer), with an index of building centroids."""

    image: Path
    truth: dict[str, gpd.GeoDataFrame]
    width: int
    height: int
    transform: object
    positives: np.ndarray  # (n, 2) pixel rows/cols of building centroids, to sample positive windows


def load_scene(image: Path, truth_path: Path) -> LabelledScene:
    """Open a scene's metadata and its labels (reprojected to the scene CRS)."""
    with rasterio.open(image) as src:
        width, height, transform, crs = src.width, src.height, src.transform, src.crs
    truth = {}
    for layer in ("buildings", "roads"):
        frame = pyogrio.read_dataframe(truth_path, layer=layer)
        truth[layer] = frame.to_crs(crs) if frame.crs != crs else frame
    xy = shapely.get_coordinates(shapely.centroid(truth["buildings"].geometry.values))
    colrow = apply_affine(~transform, xy)
    return LabelledScene(image, truth, width, height, transform, colrow[:, ::-1].copy())


def augmenter(names: tuple[str, ...]) -> A.Compose:
    """Albumentations pipeline applied jointly to the image and its mask."""
    steps: list[A.BasicTransform] = []
    if "flip" in names:
        steps += [A.HorizontalFlip(), A.VerticalFlip()]
    if "rot90" in names:
        steps.append(A.RandomRotate90())
    if "colour" in names:
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5))
    if "blur" in names:
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=0.2))
    if "noise" in names:
        steps.append(A.GaussNoise(p=0.2))
    return A.Compose(steps)


class WindowSampler:
    """Random windows, a fraction centred on buildings so positives appear in most batches."""

    def __init__(self, scenes: list[LabelledScene], cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.scenes, self.cfg, self.rng = scenes, cfg, rng
        self.augment = augmenter(cfg.augment)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One ``(image uint8 HWC, mask HW)`` pair, augmented."""
        s = self.scenes[self.rng.integers(len(self.scenes))]
        n = self.cfg.window
        if len(s.positives) and self.rng.random() < self.cfg.positive_fraction:
            r, c = s.positives[self.rng.integers(len(s.positives))] + self.rng.integers(-n // 3, n // 3, 2)
            r0, c0 = int(r) - n // 2, int(c) - n // 2
        else:
            r0, c0 = self.rng.integers(0, s.height - n + 1), self.rng.integers(0, s.width - n + 1)
        r0, c0 = int(np.clip(r0, 0, s.height - n)), int(np.clip(c0, 0, s.width - n))
        win = Window(c0, r0, n, n)
        with rasterio.open(s.image) as src:
            img = src.read(window=win)
        mask = label_window(s.truth, window_transform(win, s.transform), (n, n))
        out = self.augment(image=np.moveaxis(img, 0, -1), mask=mask)
        return out["image"], out["mask"]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.sample() for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
