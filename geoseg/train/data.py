"""Labelled scenes, their train/validation split, and random training windows with augmentation.

Splits never leak pixels: a region (a whole scene, or one block of a scene) is either training or validation,
and every training window lies inside one training region.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from geoseg.errors import ConfigError
from geoseg.grid import Grid
from geoseg.scene import open_scene, to_unit
from geoseg.train.config import DataConfig, TrainConfig
from geoseg.train.labels import IGNORE, LabelSource, load_labels
from geoseg.train.targets import boundary_target, distance_target

RANGES = {"u1": 255.0, "u2": 65535.0, "f4": 1.0, "f8": 1.0}  # pixel value that maps to 1.0, per dtype


@dataclass
class LabelledScene:
    """A scene, its labels, and pixel positions of labelled objects (to centre positive windows on)."""

    image: Path
    labels: LabelSource
    width: int
    height: int
    transform: Affine
    dtype: str
    positives: np.ndarray  # (n, 2) rows/cols

    @property
    def grid(self) -> Grid:
        return Grid(self.transform, self.width, self.height, self.labels.crs)


@dataclass(frozen=True)
class Region:
    """A rectangle of one scene (row, col, height, width) that belongs wholly to training or to validation."""

    scene: int
    row: int
    col: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)


def load_scene(image: str | Path, cfg: TrainConfig, labels: str = "", label_raster: str = "") -> LabelledScene:
    """Open a scene's metadata and its labels (reprojected to the scene's CRS, checked to overlap it)."""
    info = open_scene(image)
    if info.count < max(cfg.band_indexes):
        raise ConfigError(f"{image}: has {info.count} band(s) but train.band_indexes asks for "
                          f"{list(cfg.band_indexes)}; set band_indexes to bands the scene has")
    data = cfg.data or DataConfig()
    source = load_labels(str(image), info.grid, cfg.classes, labels, label_raster, data.layer, data.class_field)
    if source.is_vector:
        geoms = np.concatenate([source.geometries(k) for k in range(1, len(cfg.classes))])
        xy = shapely.get_coordinates(shapely.point_on_surface(geoms)) if len(geoms) else np.zeros((0, 2))
        colrow = np.column_stack(info.grid.to_pixel(xy[:, 0], xy[:, 1]))
    else:  # a label raster: positive pixels of a coarse copy on the scene's grid (any label grid is warped)
        step = max(1, max(info.width, info.height) // 512)
        shape = (max(1, info.height // step), max(1, info.width // step))
        small = source.window(info.grid.resized(*shape))
        rr, cc = np.nonzero((small > 0) & (small < len(cfg.classes)))
        colrow = (np.column_stack([cc, rr]).astype(float) + 0.5) * [info.width / shape[1], info.height / shape[0]] \
            if len(rr) else np.zeros((0, 2))
    inside = (colrow[:, 0] >= 0) & (colrow[:, 0] < info.width) & (colrow[:, 1] >= 0) & (colrow[:, 1] < info.height)
    return LabelledScene(Path(image), source, info.width, info.height, info.transform, info.dtype,
                         colrow[inside][:, ::-1].astype(np.int64).copy())


def split_regions(scenes: list[LabelledScene], data: DataConfig, pinned: tuple[str, ...] = ()
                  ) -> tuple[list[Region], list[Region]]:
    """Training and validation regions: whole scenes (``split: scene``) or square blocks (``split: blocks``)."""
    rng = np.random.default_rng(data.split_seed)
    whole = [Region(i, 0, 0, s.height, s.width) for i, s in enumerate(scenes)]
    if data.split == "scene":
        pinned = pinned or ("",) * len(scenes)
        free = [i for i, p in enumerate(pinned) if not p]
        n_val = int(round(data.val_fraction * len(scenes))) - sum(p == "val" for p in pinned)
        n_val = min(max(n_val, 0), len(free) - 1 if len(free) == len(scenes) else len(free))
        val = {i for i, p in enumerate(pinned) if p == "val"} | set(rng.permutation(free)[:n_val].tolist())
        return [r for r in whole if r.scene not in val], [r for r in whole if r.scene in val]
    if data.split != "blocks":
        raise ConfigError(f"train.data.split: unknown {data.split!r}; valid: scene, blocks")
    train: list[Region] = []
    held: list[Region] = []
    for i, s in enumerate(scenes):
        blocks = [Region(i, r, c, min(data.block, s.height - r), min(data.block, s.width - c))
                  for r in range(0, s.height, data.block) for c in range(0, s.width, data.block)]
        n_val = min(len(blocks) - 1, int(round(data.val_fraction * len(blocks)))) if len(blocks) > 1 else 0
        chosen = set(rng.permutation(len(blocks))[:n_val].tolist())
        for k, b in enumerate(blocks):
            (held if k in chosen else train).append(b)
    return train, held


def augmenter(steps: dict[str, dict[str, Any]]) -> A.Compose:
    """Albumentations pipeline applied jointly to the image and every target mask; arguments from the YAML."""
    made: list[A.BasicTransform] = []
    for name, args in steps.items():
        if name == "flip":
            made += [A.HorizontalFlip(**args), A.VerticalFlip(**args)]
        elif name == "rot90":
            made.append(A.RandomRotate90(**args))
        elif name == "scale_rotate":
            made.append(A.Affine(**{"scale": (0.8, 1.25), "rotate": (-30, 30), "p": 0.5, "fill_mask": IGNORE,
                                    **args}))
        elif name == "colour":
            made.append(A.ColorJitter(**{"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02,
                                         "p": 0.5, **args}))
        elif name == "blur":
            made.append(A.GaussianBlur(**{"blur_limit": (3, 5), "p": 0.2, **args}))
        elif name == "noise":
            made.append(A.GaussNoise(**{"std_range": (0.01, 0.05), "p": 0.2, **args}))
        elif name == "gamma":
            made.append(A.RandomGamma(**{"gamma_limit": (70, 150), "p": 0.3, **args}))
        elif name == "gray":
            made.append(A.ToGray(**{"p": 0.05, **args}))
        elif name == "channel_shuffle":  # no palette can be learnt as "the" roof colour
            made.append(A.ChannelShuffle(**{"p": 0.1, **args}))
        elif name == "downscale":  # coarser sensors, resampled up: soft edges the model must still follow
            made.append(A.Downscale(**{"scale_range": (0.5, 0.9), "p": 0.2,
                                       "interpolation_pair": {"downscale": 3, "upscale": 1}, **args}))  # area, linear
    return A.Compose(made)


class WindowSampler:
    """Random windows inside training regions, a fraction centred on labelled objects so positives appear,
    redrawn when mostly nodata; each window's labels (and multitask targets) rasterised on the fly."""

    def __init__(self, scenes: list[LabelledScene], regions: list[Region], cfg: TrainConfig, seed: int) -> None:
        n = cfg.window
        self.regions = [r for r in regions if r.height >= n and r.width >= n]
        if not self.regions:
            raise ConfigError(f"train: no training region holds a {n}px window; lower train.window or raise "
                              "train.data.block, or add scenes")
        self.scenes, self.cfg, self.seed = scenes, cfg, seed
        self.local = threading.local()  # one albumentations pipeline per loader thread (they hold RNG state)
        area = np.array([r.height * r.width for r in self.regions], float)
        self.weights = area / area.sum()
        self.positives = []
        for r in self.regions:
            p = scenes[r.scene].positives
            keep = (p[:, 0] >= r.row) & (p[:, 0] < r.row + r.height) & (p[:, 1] >= r.col) & (p[:, 1] < r.col + r.width)
            self.positives.append(p[keep])
        self.kinds = tuple(h.kind for h in cfg.heads)

    def draw_window(self, rng: np.random.Generator) -> tuple[int, Window]:
        """A window wholly inside one training region (positive-centred with probability positive_fraction)."""
        k = int(rng.choice(len(self.regions), p=self.weights))
        reg, pos, n = self.regions[k], self.positives[k], self.cfg.window
        if len(pos) and rng.random() < self.cfg.positive_fraction:
            r, c = pos[rng.integers(len(pos))] + rng.integers(-n // 3, n // 3, 2)
            r0, c0 = int(r) - n // 2, int(c) - n // 2
        else:
            r0 = reg.row + int(rng.integers(0, reg.height - n + 1))
            c0 = reg.col + int(rng.integers(0, reg.width - n + 1))
        r0 = int(np.clip(r0, reg.row, reg.row + reg.height - n))
        c0 = int(np.clip(c0, reg.col, reg.col + reg.width - n))
        return reg.scene, Window(c0, r0, n, n)

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented window: ``image`` (h, w, bands) float 0..1, ``mask`` (class ids, IGNORE = no label)
        and one float target per head kind."""
        for _ in range(10):  # nodata-aware: redraw windows that are mostly nodata
            i, win = self.draw_window(rng)
            s = self.scenes[i]
            with rasterio.open(s.image) as src:
                img = src.read(list(self.cfg.band_indexes), window=win)
                valid = src.dataset_mask(window=win) > 0
            if img.dtype.kind == "f":
                valid &= np.isfinite(img).all(axis=0)
            if valid.mean() >= self.cfg.min_valid:
                break
        image = np.moveaxis(to_unit(img, RANGES.get(img.dtype.str[1:], 1.0)), 0, -1)
        mask, extra = self.targets(s, win)
        mask[~valid] = IGNORE
        augment = getattr(self.local, "augment", None)
        if augment is None:
            augment = self.local.augment = augmenter(self.cfg.augment)
        augment.set_random_seed(int(rng.integers(2**31)))
        # invalid pixels travel as a mask (1 = invalid; borders an affine warp fills count as invalid) so the
        # loop can normalise them exactly as inference does
        out = augment(image=image, masks=[mask, (~valid).astype(np.uint8)] + extra)
        masks = out["masks"]
        result = {"image": out["image"], "mask": masks[0], "valid": masks[1] == 0}
        for kind, target in zip([k for k in self.kinds if k != "colour"], masks[2:]):
            result[kind] = target
        return result

    def targets(self, s: LabelledScene, win: Window) -> tuple[np.ndarray, list[np.ndarray]]:
        """Class mask of the window, plus boundary/distance targets computed with a margin around it (so an
        object cut by the window edge keeps its true edge and centre)."""
        n = self.cfg.window
        mask = s.labels.window(s.grid.window(win))
        wanted = [k for k in self.kinds if k != "colour"]
        if not wanted:
            return mask, []
        m = self.cfg.label_margin
        big = Window(win.col_off - m, win.row_off - m, n + 2 * m, n + 2 * m)
        grid, shape = s.grid.window(big), (n + 2 * m, n + 2 * m)
        if s.labels.is_vector:
            inst = s.labels.instances(grid, tuple(range(1, len(self.cfg.classes))))
        else:
            lab = s.labels.window(grid)
            inst, start = np.zeros(shape, np.int32), 0
            for k in range(1, len(self.cfg.classes)):
                comp, count = ndimage.label(lab == k)
                inst[comp > 0] = comp[comp > 0] + start
                start += count
        out = []
        for kind in wanted:
            shared = any(h.kind == "boundary" and h.shared_weight != 1.0 for h in self.cfg.heads)
            full = boundary_target(inst, self.cfg.boundary_px, shared) if kind == "boundary" \
                else distance_target(inst)
            out.append(full[m:m + n, m:m + n])
        return mask, out

    def batch(self, step: int, size: int, threads: int = 1) -> dict[str, np.ndarray]:
        """The batch of optimiser step ``step``: sample ``i`` draws from a generator seeded by (seed, step, i),
        so batches are the same whatever the number of loader threads, and a resumed run needs only the step."""
        rngs = [np.random.default_rng([self.seed, step, i]) for i in range(size)]
        if threads > 1:  # reading (GDAL), rasterising and most augmentations release the GIL
            with ThreadPoolExecutor(threads) as pool:
                samples = list(pool.map(self.sample, rngs))
        else:
            samples = [self.sample(r) for r in rngs]
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
