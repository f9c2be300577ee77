"""Streaming a block's tiles, the uint8 class raster, the auto block size and the kept scene handles."""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import numpy as np
import pytest
import rasterio

from geoseg.tiling import TileSpec, auto_block_size, make_blocks, tile_offsets
from geoseg.predict import CoreBatch, TileBatch
from geoseg.scene import forget_handles, open_scene, scene_handle
from geoseg.stitch import class_raster, predict_block


def test_class_raster_equals_argmax_with_ties_and_nodata() -> None:
    rng = np.random.default_rng(3)
    for k in (2, 3, 6):
        probs = rng.random((k, 97, 61)).astype(np.float32)
        probs[:, :9] = 0.25          # ties: the lower class wins, as np.argmax
        probs[:, 20:25] = -1.0       # nodata fill
        probs[1:, 40:44] = probs[:1, 40:44]
        got = class_raster(probs)
        assert got.dtype == np.uint8
        assert np.array_equal(got, np.argmax(probs, axis=0))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
@pytest.mark.parametrize("with_nodata", [False, True])
def test_predict_block_places_every_core_once_in_batches(batch_size: int, with_nodata: bool) -> None:
    spec = TileSpec(64, 8, 1)
    block = make_blocks(200, 150, spec, 2 * spec.core)[0]
    rng = np.random.default_rng(0)
    n_rows = (block.tile_rows[1] - block.tile_rows[0]) * spec.core + 2 * spec.halo
    n_cols = (block.tile_cols[1] - block.tile_cols[0]) * spec.core + 2 * spec.halo
    x = rng.integers(0, 250, (2, n_rows, n_cols), dtype=np.uint8)
    valid = np.ones((n_rows, n_cols), bool)
    valid[:5] = not with_nodata
    ran = np.array([True, False, True, True])[:len(tile_offsets(block, spec))]
    sizes, got_masks = [], []
    h, c = spec.halo, spec.core

    def feed(batches: Iterable[TileBatch]) -> Iterator[CoreBatch]:  # a "model" that returns its input's cores
        for tiles, masks in batches:
            sizes.append(len(tiles))
            got_masks.append(masks is not None)
            cores = np.stack(tiles)[:, :, h:h + c, h:h + c]
            yield CoreBatch(cores[:, 0].copy(), cores.astype(np.float32))

    classes, probs = predict_block(feed, x, valid, ran, block, spec, batch_size, 255, 2, -1.0)
    assert max(sizes) <= batch_size and sum(sizes) == ran.sum()
    assert set(got_masks) == {with_nodata}  # masks travel only when some pixel is invalid
    assert probs is not None and classes.dtype == np.uint8
    for n, (r, q) in enumerate(tile_offsets(block, spec)):
        core = probs[:, r:r + c, q:q + c]
        want = x[:, r + h:r + h + core.shape[1], q + h:q + h + core.shape[2]] if ran[n] else -1.0
        assert np.array_equal(core, np.broadcast_to(want, core.shape))
        want_cls = x[0, r + h:r + h + core.shape[1], q + h:q + h + core.shape[2]] if ran[n] else 255
        assert np.array_equal(classes[r:r + c, q:q + c], np.broadcast_to(want_cls, core.shape[1:]))
    classes_only, none = predict_block(feed, x, valid, ran, block, spec, batch_size, 255)
    assert none is None and np.array_equal(classes_only, classes)


def test_auto_block_size_does_not_grow_with_the_scene() -> None:
    spec = TileSpec(1024, 160, 32)  # the default model: 704 px cores
    cpu = {n: auto_block_size(n, n, spec, workers=2) for n in (4096, 16384, 65536)}
    assert set(cpu.values()) == {704}
    gpu = auto_block_size(32768, 32768, spec, workers=1, batch_size=16)
    assert gpu == 4 * spec.core  # a block holds one full GPU batch
    small = auto_block_size(1500, 1500, TileSpec(256, 32, 32), workers=2)
    assert small % 192 == 0 and small < 1024  # small scenes still give every worker several blocks


def test_scene_handle_is_kept_and_reopened_when_the_file_changes(make_scene: Any) -> None:
    path = make_scene()
    info = open_scene(path)
    first = scene_handle(info)
    assert scene_handle(info) is first and not first.closed
    with rasterio.open(path, "r+") as dst:  # rewrite in place: new mtime, so a new handle
        dst.write(np.zeros((dst.count, dst.height, dst.width), dst.dtypes[0]))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    second = scene_handle(info)
    assert second is not first
    assert int(second.read(1, window=((0, 4), (0, 4))).max()) == 0
    forget_handles()
    assert second.closed
