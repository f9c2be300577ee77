"""Synthetic training scenes: one look and one ground sampling distance per seed, read as inference reads them.

Domain randomisation for the default model: every seed gets its own look (``look: random`` draws one from the
training looks) and its own GSD (``gsd: [lo, hi]``, metres). A scene rendered at another GSD than the model's is
resampled onto the model's grid through the same warped reader ``infer --resample`` uses, so training sees the
softness and aliasing real resampled imagery has. Labels are rasterised from the exact vectors on that grid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import rasterio

from geoseg import synth as synth_module
from geoseg.scene import open_scene, read_block
from geoseg.synth import SynthSpec, write_scene
from geoseg.tempfiles import atomic_path
from geoseg.train.config import SynthData, TrainConfig

RESAMPLE_BLOCK = 1024


def _code_key() -> str:
    """Hash of the generator's source: a changed look never reuses stale scenes."""
    sources = sorted(Path(synth_module.__file__).parent.glob("*.py")) + [Path(__file__)]
    return hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:8]


def scene_gsd(s: SynthData, seed: int, model_gsd: float) -> float:
    """The GSD a seed is rendered at: log-uniform in ``s.gsd`` (the model's own when no range is given)."""
    if not s.gsd:
        return model_gsd
    lo, hi = float(s.gsd[0]), float(s.gsd[-1])
    u = np.random.default_rng([seed, 0x65D]).uniform()
    return float(round(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))), 3))


def resample_to(src_path: Path, out: Path, gsd: float) -> None:
    """Write ``src_path`` on a grid of ``gsd`` metres, read block by block through the ``--resample`` reader."""
    info = open_scene(src_path).at_resolution(gsd)
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "width": info.width, "height": info.height, "transform": info.transform}
    bands = tuple(range(1, info.count + 1))
    with atomic_path(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, info.height, RESAMPLE_BLOCK):
            for c in range(0, info.width, RESAMPLE_BLOCK):
                win = rasterio.windows.Window(c, r, RESAMPLE_BLOCK, RESAMPLE_BLOCK).intersection(info.grid.full)
                data, _ = read_block(info, bands, win)
                dst.write(data, window=win)


def make_synth_scenes(cfg: TrainConfig) -> list[tuple[Path, Path]]:
    """(image, truth) paths of every training and validation seed, made once and cached in ``cfg.data_dir``."""
    assert cfg.synth is not None
    s, folder, code = cfg.synth, Path(cfg.data_dir), _code_key()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(s.seed, s.seed + s.count + s.val_count):
        gsd = scene_gsd(s, seed, cfg.gsd)
        stem = f"synth_{seed}_{s.size}_{s.look}_{gsd:g}_{code}" if (s.look != "classic" or s.gsd) \
            else f"synth_{seed}_{s.size}_{code}"
        image, truth = folder / f"{stem}.tif", folder / f"{stem}_truth.gpkg"
        if not (image.exists() and truth.exists()):
            side = max(64, round(s.size * cfg.gsd / gsd))  # the same ground extent whatever the GSD
            spec = SynthSpec(side, side, seed=seed, density=s.density, gsd=gsd, look=s.look)
            if abs(gsd - cfg.gsd) <= 1e-9:
                write_scene(spec, image, truth, overwrite=True)
            else:
                native = folder / f"{stem}_native.tif"
                write_scene(spec, native, truth, overwrite=True)
                resample_to(native, image, cfg.gsd)
                native.unlink()
        out.append((image, truth))
    return out
