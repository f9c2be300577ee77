"""Inputs of ``geoseg bench memory``: a large scene made cheaply from one synthetic pattern, and a real (1x1
convolution) model that reads that scene's classes back, so a 32768² run costs minutes of CPU, not hours.

The pattern is the synthetic painter's truth (``geoseg.synth``: buildings, terraced rows, road network) as flat
class colours with per-pixel noise; building walls (the pixels next to another building or to the ground) get a
darker colour, which the model's boundary head picks up, so the instance split has walls to cut along. The
scene repeats the pattern mirrored (copy i, j flipped when i, j are odd), so roads and buildings run on across
the pattern's edges: objects cross every block edge and every road cell is finished by a reduction, as in a
real scene. The colours are far apart (nearest-colour margins of 5 noise amplitudes or more), so the model's
argmax gives the pattern's classes exactly: realistic object counts and shapes rather than random speckle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

PATTERN = 4096  # pattern side in pixels: 5 068 buildings and 36 roads per copy (seed 77)
SEED = 77
NOISE = 12  # per-pixel, per-band uniform noise amplitude (0..255 scale)
# flat colours, RGB: background, building roof, road; building walls (class building, boundary head high)
COLOURS = np.array([[90, 150, 70], [200, 70, 60], [128, 128, 128]], np.float64)
WALL = np.array([120, 30, 40], np.float64)
SIGMA = 30.0  # softmax temperature of the nearest-colour classifier, in 0..255 units
WALL_BELOW = 250.0  # the boundary head fires where R + G + B is below this (walls are the only dark colour)
WALL_SOFTNESS = 15.0  # its logit: (WALL_BELOW - (R + G + B)) / this
TILE, HALO = 512, 32


def pattern_image(side: int = PATTERN, seed: int = SEED) -> np.ndarray:
    """The ``side``² pattern as a (3, side, side) uint8 array (flat class colours, walls darker, noise)."""
    from rasterio.features import rasterize
    from scipy import ndimage

    from geoseg.synth import SynthSpec
    from geoseg.synth.model import make_truth
    from geoseg.synth.render import label_window

    spec = SynthSpec(side, side, seed=seed)
    truth = make_truth(spec)
    labels = label_window(truth, spec.transform, (side, side))
    shapes = [(g, i + 1) for i, g in enumerate(truth["buildings"].geometry.values) if g is not None and not g.is_empty]
    ids = rasterize(shapes, out_shape=(side, side), transform=spec.transform, fill=0, dtype="int32")
    ids[labels != 1] = 0  # what the class raster shows (buildings over roads)
    # a wall: a building pixel with a 4-neighbour of another id (another unit or the ground), inside the pattern
    wall = (ids > 0) & ((ndimage.grey_erosion(ids, footprint=ndimage.generate_binary_structure(2, 1),
                                              mode="nearest") != ids)
                        | (ndimage.grey_dilation(ids, footprint=ndimage.generate_binary_structure(2, 1),
                                                 mode="nearest") != ids))
    rgb = COLOURS[labels]
    rgb[wall] = WALL
    rgb += np.random.default_rng(seed).integers(-NOISE, NOISE + 1, rgb.shape)
    return np.clip(rgb, 1, 255).astype(np.uint8).transpose(2, 0, 1)


def write_memory_scene(path: Path, size: int, pattern: int = PATTERN, seed: int = SEED) -> None:
    """The ``size``² scene: the pattern mirrored across it, written one pattern copy at a time (tiled DEFLATE
    GeoTIFF like ``geoseg synth``'s, on its grid), under a temporary name renamed into place when complete."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.synth import SynthSpec
    from geoseg.tempfiles import atomic_path

    side = min(pattern, size)
    image = pattern_image(side, seed)
    spec = SynthSpec(size, size, seed=seed)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=spec.crs,
                   transform=spec.transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                   predictor=2, interleave="pixel", photometric="RGB", BIGTIFF="IF_SAFER")
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, r in enumerate(range(0, size, side)):
            for j, c in enumerate(range(0, size, side)):
                copy = image[:, ::-1] if i % 2 else image
                copy = copy[:, :, ::-1] if j % 2 else copy
                h, w = min(side, size - r), min(side, size - c)
                dst.write(np.ascontiguousarray(copy[:, :h, :w]), window=Window(c, r, w, h))


def memory_scene(size: int, folder: Path, pattern: int = PATTERN) -> Path:
    """The bench scene for ``size``, made once (in a child process, so its memory is not the bench's) and reused."""
    path = folder / f"memory_{size}_p{min(pattern, size)}.tif"
    if not path.exists():
        code = ("import sys; from pathlib import Path; from geoseg.memory_scene import write_memory_scene; "
                "write_memory_scene(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))")
        subprocess.run([sys.executable, "-c", code, str(path), str(size), str(pattern)], check=True)
    return path


def linear_weights() -> tuple[np.ndarray, np.ndarray]:
    """Weights (4, 3) and biases (4,) on the bundle's normalised input: three class logits of a nearest-colour
    classifier (Gaussian templates: ``-|x - c|² / 2σ²`` less the part common to all classes, which is linear in
    x) and a boundary logit that is positive on the dark wall colour."""
    scale, shift = 0.25 * 255, 0.5 * 255  # x = scale * normalised + shift (mean 0.5, std 0.25)
    raw_w = np.vstack([COLOURS / SIGMA**2, -np.ones((1, 3)) / WALL_SOFTNESS])
    raw_b = np.concatenate([-(COLOURS**2).sum(1) / (2 * SIGMA**2), [WALL_BELOW / WALL_SOFTNESS]])
    return raw_w * scale, raw_w @ np.full(3, shift) + raw_b


def linear_bundle(folder: Path) -> Path:
    """The bench's model: geoseg's ``pixel-linear`` architecture (a 1x1 convolution) with :func:`linear_weights`,
    three classes and a boundary head, tile 512 with a 32 px halo; saved once and reused."""
    import torch

    from geoseg.models import BundleMeta, ClassInfo, build_model, save_bundle

    path = folder / "memory-linear.safetensors"
    if path.exists():
        return path
    model = build_model("pixel-linear", in_channels=3, classes=4)
    weights, biases = linear_weights()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weights, dtype=torch.float32)[:, :, None, None])
        model.bias.copy_(torch.tensor(biases, dtype=torch.float32))
    classes = (ClassInfo("background"), ClassInfo("building", "buildings", "#e31a1c"),
               ClassInfo("road", "roads", "#636363"))
    meta = BundleMeta(arch="pixel-linear", arch_args={"in_channels": 3, "classes": 4}, classes=classes,
                      heads=(("boundary", 1),), tile=TILE, halo=HALO, stride=32,
                      provenance={"what": "geoseg bench memory: reads the bench scene's class colours back"})
    return save_bundle(path, model, meta)
