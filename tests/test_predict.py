"""The predictor's feed: raw tiles normalised on the device, argmax and crop there, cores only back; one shared
model per device and process. The CUDA-only checks (pinned buffers, streams) skip on a machine without CUDA."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.models import BundleMeta, build_model, load_bundle, save_bundle
from geoseg.predict import (CoreBatch, Predictor, TileBatch, forget_predictor, get_predictor, normalise_tiles,
                            norm_terms, pipelined)
from geoseg.scene import normalise
from geoseg.stitch import class_raster
from tests.conftest import CLASSES, TINY_ARGS

NO_CUDA = "CUDA-only check (pinned buffers, streams, bf16): no CUDA device here, so not run"
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def raw_tiles(dtype: str, n: int = 3, t: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    top = {"uint8": 255, "uint16": 65535}.get(dtype, 1.5)
    data = (rng.random((n, 3, t, t)) * top - (0.2 if top == 1.5 else 0)).astype(dtype)  # floats pass 0..1
    valid = rng.random((n, t, t)) > 0.1
    if dtype.startswith("float"):
        data[:, 1][~valid] = np.nan  # non-finite pixels are invalid ones
    return data, valid


@pytest.mark.parametrize("dtype, scale", [("uint8", 255.0), ("uint16", 65535.0), ("uint16", 4095.0),
                                          ("float32", 1.0), ("float64", 1.0)])  # 4095: 12-bit data, clipped
def test_normalise_on_the_device_equals_the_numpy_normalise(dtype: str, scale: float) -> None:
    data, valid = raw_tiles(dtype)
    terms = [torch.from_numpy(a) for a in norm_terms(scale, MEAN, STD)]
    got = normalise_tiles(torch.from_numpy(data), torch.from_numpy(valid), *terms).numpy()
    want = np.stack([normalise(d, v, scale, MEAN, STD) for d, v in zip(data, valid)])
    assert got.dtype == np.float32 and np.array_equal(got, want)  # bit for bit, invalid pixels 0
    all_valid = normalise_tiles(torch.from_numpy(data[:1]), None, *terms).numpy()
    assert np.array_equal(all_valid, normalise(data[0], np.ones(valid.shape[1:], bool), scale, MEAN, STD)[None],
                          equal_nan=True)
    assert np.array_equal(data, raw_tiles(dtype)[0], equal_nan=True)  # the input is left as it was


def heads_bundle(tmp_path: Path) -> Path:
    torch.manual_seed(5)
    args = {**TINY_ARGS, "classes": 5}
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, heads=(("boundary", 1), ("distance", 1)),
                      mean=MEAN, std=STD, tile=128, halo=32)
    return save_bundle(tmp_path / "heads.safetensors", build_model("smp:Unet", **args), meta)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_feed_gives_the_cores_of_the_whole_tile_path_bit_for_bit(dtype: str, tmp_path: Path) -> None:
    """Raw tiles in, cores out, equal to normalising in numpy, predicting whole tiles and cropping (the path the
    feed replaces), with a padded short last batch, heads and invalid pixels."""
    pred = Predictor(load_bundle(heads_bundle(tmp_path)), torch.device("cpu"))
    scale, halo, bs = {"uint8": 255.0, "uint16": 65535.0}[dtype], 32, 2
    data, valid = raw_tiles(dtype)
    batches: list[TileBatch] = [(list(data[:2]), list(valid[:2])), (list(data[2:]), list(valid[2:]))]
    got = [CoreBatch(b.classes.copy(), None if b.probs is None else b.probs.copy())
           for b in pred.feed(batches, scale=scale, halo=halo, batch_size=bs, want_probs=True)]
    x = np.stack([normalise(d, v, scale, MEAN, STD) for d, v in zip(data, valid)])
    whole = pred.predict(x, bs)[:, :, halo:-halo, halo:-halo]
    probs = np.concatenate([b.probs for b in got if b.probs is not None])
    assert probs.shape == (3, 5, 64, 64) and np.array_equal(probs, whole)  # class channels and heads
    classes = np.concatenate([b.classes for b in got])
    assert classes.dtype == np.uint8
    assert np.array_equal(classes, np.stack([class_raster(p[:3]) for p in whole]))
    classes_only = list(pred.feed(batches, scale=scale, halo=halo, batch_size=bs, want_probs=False))
    assert all(b.probs is None for b in classes_only)
    assert np.array_equal(np.concatenate([b.classes for b in classes_only]), classes)


def test_pipelined_launches_the_next_batch_before_collecting_this_one() -> None:
    log: list[tuple[str, int, int]] = []

    def launch(slot: int, batch: TileBatch) -> int:
        log.append(("launch", slot, len(batch[0])))
        return len(batch[0])

    def collect(slot: int, n: int) -> CoreBatch:
        log.append(("collect", slot, n))
        return CoreBatch(np.full((n, 1, 1), slot, np.uint8), None)

    batches: list[TileBatch] = [([np.zeros(1)] * n, None) for n in (2, 2, 1)]
    out = [b.classes[:, 0, 0].tolist() for b in pipelined(batches, launch, collect)]
    assert out == [[0, 0], [1, 1], [0]]  # slots alternate, batches come back in order
    assert log == [("launch", 0, 2), ("launch", 1, 2), ("collect", 0, 2), ("launch", 0, 1), ("collect", 1, 2),
                   ("collect", 0, 1)]


def test_one_model_per_device_shared_by_threads(tiny_bundle: Path) -> None:
    forget_predictor(tiny_bundle)
    with ThreadPoolExecutor(4) as pool:
        preds = list(pool.map(lambda _: get_predictor(tiny_bundle, "auto"), range(8)))
    assert all(p is preds[0] for p in preds)  # loaded once, whatever the threads
    if not torch.cuda.is_available():
        assert get_predictor(tiny_bundle, "cpu") is preds[0]  # "auto" resolves before the cache is asked
    pred = get_predictor(tiny_bundle, "cpu")
    data, valid = raw_tiles("uint8", n=4, seed=1)

    def run(k: int) -> np.ndarray:
        batch: list[TileBatch] = [([data[k]], [valid[k]])]
        return next(pred.feed(batch, scale=255.0, halo=32, batch_size=1, want_probs=True)).probs.copy()

    serial = [run(k) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, range(4)))
    assert all(np.array_equal(a, b) for a, b in zip(serial, together))  # a shared model, no shared state


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_feed_stages_in_pinned_buffers_and_agrees_with_cpu(tmp_path: Path) -> None:
    bundle = load_bundle(heads_bundle(tmp_path))
    cpu = Predictor(bundle, torch.device("cpu"))
    data, valid = raw_tiles("uint16", n=5)
    batches: list[TileBatch] = [(list(data[i:i + 2]), list(valid[i:i + 2])) for i in range(0, 5, 2)]
    want = [b.classes.copy() for b in cpu.feed(batches, scale=65535.0, halo=32, batch_size=2, want_probs=False)]
    gpu = Predictor(load_bundle(heads_bundle(tmp_path)), torch.device("cuda", 0))
    got = [(b.classes.copy(), b.probs.copy()) for b in gpu.feed(batches, scale=65535.0, halo=32, batch_size=2,
                                                                 want_probs=True)]
    stage = gpu._local.stage
    assert all(buf.is_pinned() for buf in stage.buffers.values())
    assert {name for name, _ in stage.buffers} == {"raw", "valid", "classes", "probs"}
    assert stage.buffers[("raw", 0)].dtype == torch.uint16  # raw tiles go up in their own dtype
    agree = np.mean(np.concatenate([g[0] for g in got]) == np.concatenate(want))
    assert agree > 0.98  # bf16 autocast: a few boundary pixels may flip
    assert got[0][1].shape == (2, 5, 64, 64)
