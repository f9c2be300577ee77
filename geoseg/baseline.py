"""The yardstick for ``geoseg bench infer --baseline``: the plain windowed loop a user would write in 30 lines.

One Python thread, torch's own intra-op threads on every core, rasterio reads of each tile with its halo
(boundless, zero-filled at the scene edges), a forward pass, the argmax core written to a tiled GeoTIFF. No
Dask, no vectors, no COG. Its efficiency is measured the way geoseg's is (model-only on the same number of
tiles, warm, in the same process), so the two figures compare like for like.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg.models.bundle import Bundle


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads for this thread, restored afterwards (geoseg's predictor sets its own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plain_loop(scene: Path, out: Path, bundle: Bundle, tile: int, halo: int, threads: int,
               device: torch.device) -> tuple[float, int]:
    """Run the loop; returns (seconds, tiles run)."""
    start = time.perf_counter()
    model, meta = bundle.model.eval().to(device), bundle.meta
    core, n = tile - 2 * halo, 0
    with torch_threads(threads), rasterio.open(scene) as src, rasterio.open(
            out, "w", driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
            transform=src.transform, tiled=True, blockxsize=512, blockysize=512, compress="deflate") as dst:
        scale = meta.scale_for(np.dtype(src.dtypes[0]))
        mean = np.asarray(meta.mean, np.float32)[:, None, None]
        std = np.asarray(meta.std, np.float32)[:, None, None]
        for r in range(0, src.height, core):
            for c in range(0, src.width, core):
                win = Window(c - halo, r - halo, tile, tile)
                x = src.read(list(meta.band_indexes), window=win, boundless=True, fill_value=0)
                x = (x.astype(np.float32) / scale - mean) / std
                with torch.inference_mode():
                    logits = model(torch.from_numpy(x[None]).to(device))[0, :len(meta.classes)]
                # numpy's argmax: torch's over a short class dim is several times slower on CPU
                classes = logits.cpu().numpy().argmax(0).astype(np.uint8)
                h, w = min(core, src.height - r), min(core, src.width - c)
                dst.write(classes[halo:halo + h, halo:halo + w], 1, window=Window(c, r, w, h))
                n += 1
    return time.perf_counter() - start, n


def loop_model_only(bundle: Bundle, tile: int, n_tiles: int, threads: int, device: torch.device) -> float:
    """The loop's bound: ``n_tiles`` forwards alone, one at a time with ``threads`` intra-op threads, warm."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, bundle.meta.n_bands, tile, tile),
                                                                  dtype=np.float32)).to(device)
    with torch_threads(threads), torch.inference_mode():
        bundle.model(x).cpu()  # warm-up, outside the timing
        start = time.perf_counter()
        for _ in range(n_tiles):
            bundle.model(x).cpu()  # .cpu(): waits for the device, as the loop's argmax does
        return time.perf_counter() - start
