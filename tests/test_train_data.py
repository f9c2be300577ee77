"""Training data: labels rasterised per window (any CRS, vectors or rasters), leak-free splits, joint
augmentation, nodata, multitask targets, losses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.grid import Grid
from geoseg.synth import SynthSpec, label_window, write_scene
from geoseg.train.config import DataConfig, SceneSource, TrainConfig
from geoseg.train.data import Region, WindowSampler, load_scene, split_regions
from geoseg.train.labels import IGNORE
from geoseg.train.losses import tanimoto_complement_loss
from geoseg.train.targets import boundary_target, distance_target

CLASSES = ({"name": "background"}, {"name": "building", "layer": "buildings"}, {"name": "road", "layer": "roads"})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("data")
    image, truth = folder / "s.tif", folder / "s_truth.gpkg"
    layers = write_scene(SynthSpec(320, 288, seed=21), image, truth)
    return image, truth, layers


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"out": "x.safetensors", "classes": CLASSES, "window": 64, "augment": {}, **kw})


def test_vector_labels_match_the_painter_in_any_label_crs(synth, tmp_path):
    image, truth, layers = synth
    # the same labels stored in WGS84: reprojected back to the scene's UTM zone, they rasterise the same pixels
    # except along edges (reprojection moves vertices by well under a pixel): >= 99 % agreement
    wgs = tmp_path / "wgs84.gpkg"
    for name in ("buildings", "roads"):
        pyogrio.write_dataframe(layers[name].to_crs("EPSG:4326"), wgs, layer=name)
    for labels, min_agree in ((truth, 1.0), (wgs, 0.99)):
        scene = load_scene(image, config(), labels=str(labels))
        with rasterio.open(image) as src:
            win = Window(40, 30, 200, 150)
            tf = window_transform(win, src.transform)
        got = scene.labels.window(Grid(tf, 200, 150))
        want = label_window(layers, tf, (150, 200))
        assert (got == want).mean() >= min_agree
        assert (want == 1).sum() > 500  # the window has buildings to compare


def test_label_raster_gives_the_same_windows(synth, tmp_path):
    image, truth, layers = synth
    with rasterio.open(image) as src:
        full = label_window(layers, src.transform, (src.height, src.width))
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform)
    raster = tmp_path / "labels.tif"
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(full[None])
    scene = load_scene(image, config(), label_raster=str(raster))
    vec = load_scene(image, config(), labels=str(truth))
    with rasterio.open(image) as src:
        tf = window_transform(Window(100, 50, 96, 80), src.transform)
    assert (scene.labels.window(Grid(tf, 96, 80)) == vec.labels.window(Grid(tf, 96, 80))).all()
    assert len(scene.positives) > 0  # positives found on the label raster too


@pytest.mark.parametrize("block", [96, 128])
def test_block_split_never_leaks_pixels(synth, block):
    image, truth, _ = synth
    cfg = config(data=DataConfig(split="blocks", block=block, val_fraction=0.3, split_seed=3))
    scenes = [load_scene(image, cfg, labels=str(truth))]
    train, val = split_regions(scenes, cfg.data)
    assert train and val
    # every pixel belongs to exactly one region: the regions tile the scene
    cover = np.zeros((scenes[0].height, scenes[0].width), int)
    for r in train + val:
        cover[r.row:r.row + r.height, r.col:r.col + r.width] += 1
    assert (cover == 1).all()
    val_px = np.zeros_like(cover, bool)
    for r in val:
        val_px[r.row:r.row + r.height, r.col:r.col + r.width] = True
    sampler = WindowSampler(scenes, train, cfg, seed=0)
    for k in range(300):
        _, win = sampler.draw_window(np.random.default_rng(k))
        r0, c0 = int(win.row_off), int(win.col_off)
        assert not val_px[r0:r0 + 64, c0:c0 + 64].any()  # no validation pixel in any training window
        assert any(r.row <= r0 and r0 + 64 <= r.row + r.height and r.col <= c0 and c0 + 64 <= r.col + r.width
                   for r in train)  # and every window lies inside one training block


def test_scene_split_holds_out_whole_scenes(synth):
    image, truth, _ = synth
    cfg = config(data=DataConfig(scenes=(SceneSource(str(image)),) * 3, split="scene"))
    scenes = [load_scene(image, cfg, labels=str(truth)) for _ in range(3)]
    train, val = split_regions(scenes, cfg.data, ("", "val", ""))
    assert [r.scene for r in val] == [1] and sorted(r.scene for r in train) == [0, 2]
    sampler = WindowSampler(scenes, train, cfg, seed=0)
    assert {sampler.draw_window(np.random.default_rng(k))[0] for k in range(100)} == {0, 2}


def test_augmentation_moves_image_and_every_target_together(synth):
    image, truth, _ = synth
    heads = (("boundary", 1), ("distance", 1))
    from geoseg.train.config import HeadConfig

    cfg = config(heads=tuple(HeadConfig(n) for n, _ in heads), positive_fraction=1.0)
    scenes = [load_scene(image, cfg, labels=str(truth))]
    regions = [Region(0, 0, 0, scenes[0].height, scenes[0].width)]
    plain = WindowSampler(scenes, regions, cfg, seed=5).sample(np.random.default_rng(5))
    flipped_cfg = dataclasses.replace(cfg, augment={"flip": {"p": 1.0}})
    flipped = WindowSampler(scenes, regions, flipped_cfg, seed=5).sample(np.random.default_rng(5))  # same window
    for key in ("image", "mask", "boundary", "distance"):
        assert np.array_equal(flipped[key], plain[key][::-1, ::-1]), key  # horizontal + vertical flip
    assert plain["mask"].max() >= 1 and plain["boundary"].max() == 1.0 and plain["distance"].max() == 1.0


def test_nodata_pixels_carry_no_label(tmp_path):
    image, truth = tmp_path / "n.tif", tmp_path / "n_truth.gpkg"
    write_scene(SynthSpec(256, 256, seed=4, nodata_border=40), image, truth)
    cfg = config(min_valid=0.0)
    scenes = [load_scene(image, cfg, labels=str(truth))]
    sampler = WindowSampler(scenes, [Region(0, 0, 0, 256, 256)], cfg, seed=1)
    with rasterio.open(image) as src:
        valid = src.dataset_mask() > 0
    seen_ignore = False
    for k in range(10):
        _, win = sampler.draw_window(np.random.default_rng(k))  # the window sample() draws (min_valid 0: no redraw)
        s = sampler.sample(np.random.default_rng(k))
        r0, c0 = int(win.row_off), int(win.col_off)
        expect = ~valid[r0:r0 + 64, c0:c0 + 64]
        assert np.array_equal(s["mask"] == IGNORE, expect)
        seen_ignore |= bool(expect.any())
    assert seen_ignore


def test_boundary_and_distance_targets_by_hand():
    inst = np.zeros((9, 12), np.int32)
    inst[1:8, 1:6] = 1   # a 7x5 house
    inst[1:8, 6:11] = 2  # touching a second one
    b = boundary_target(inst, 1)
    # inner boundary: the outer ring of each house, including the shared wall (columns 5 and 6)
    assert b[1, 1:11].all() and b[4, 5] == 1 and b[4, 6] == 1 and b[4, 3] == 0 and b[0].sum() == 0
    d = distance_target(inst)
    # house 1 interior after removing its ring is 5x3 (rows 2-6, cols 2-4); the EDT to the ring peaks at the
    # centre (4, 3) with 2 pixels (to rows 2/6 ring... the ring rows 1 and 7 are 3 away, cols 1 and 5 are 2),
    # normalised: 1.0 at the centre, 0.5 one pixel in from the ring (distance 1 / 2)
    assert d[4, 3] == 1.0 and d[2, 3] == 0.5 and d[1, 3] == 0.0 and d[0, 0] == 0.0
    assert d[4, 8] == 1.0  # the second house is normalised by its own maximum


def test_shared_walls_are_marked_and_weighted_apart():
    from geoseg.train.config import HeadConfig
    from geoseg.train.losses import head_loss
    from geoseg.train.targets import SHARED

    inst = np.zeros((9, 12), np.int32)
    inst[1:8, 1:6] = 1
    inst[1:8, 6:11] = 2
    b = boundary_target(inst, 1, shared=True)
    # the wall between the houses (columns 5 and 6, away from the outer ring) is SHARED; the outer ring stays 1
    assert b[4, 5] == SHARED and b[4, 6] == SHARED and b[4, 1] == 1 and b[1, 3] == 1 and b[4, 3] == 0
    assert ((b > 0) == (boundary_target(inst, 1) > 0)).all()  # the same band, only the wall marked apart
    wide = boundary_target(inst, 2, shared=True)
    assert wide[4, 4] == SHARED and wide[4, 7] == SHARED and wide[4, 2] == 1
    # a wall missed costs shared_weight times what an outer edge missed costs (weighted BCE, by hand)
    t = torch.from_numpy(b)[None, None]
    valid = torch.ones(1, 9, 12, dtype=torch.bool)
    logits = torch.zeros_like(t)  # p = 0.5 everywhere: every pixel's BCE is log 2
    plain = head_loss(HeadConfig(name="boundary", loss="bce"))(logits, t.clamp(max=1), valid)
    weighted = head_loss(HeadConfig(name="boundary", loss="bce", shared_weight=5.0))(logits, t, valid)
    n, walls = t.numel(), int((t > 1.5).sum())
    assert float(plain) == pytest.approx(np.log(2), rel=1e-5)
    assert float(weighted) == pytest.approx(np.log(2), rel=1e-5)  # weights cancel when every pixel costs the same
    logits = torch.where(t > 0, -2.0, 0.0)  # boundary missed everywhere it is: walls weigh 5x
    lw = float(head_loss(HeadConfig(name="boundary", loss="bce", shared_weight=5.0))(logits, t, valid))
    miss = float(torch.nn.functional.softplus(torch.tensor(2.0)))
    edge = int((t == 1).sum())
    want = (5 * walls * miss + edge * miss + (n - walls - edge) * np.log(2)) / (n + 4 * walls)
    assert lw == pytest.approx(want, rel=1e-5)


def test_tanimoto_with_complement_by_hand():
    t = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    assert float(tanimoto_complement_loss(t, t)) == pytest.approx(0.0, abs=1e-5)  # perfect: T = 1 both ways
    p = torch.full((1, 1, 2, 2), 0.5)
    # T(p, t) = sum(pt) / (sum p² + sum t² - sum pt) = 1 / (1 + 2 - 1) = 0.5; the complement is the same by
    # symmetry (1 - p = 0.5, 1 - t swaps the ones), so the loss is 1 - (0.5 + 0.5) / 2 = 0.5
    assert float(tanimoto_complement_loss(p, t)) == pytest.approx(0.5, abs=1e-5)
    # on an empty truth the plain Tanimoto is 0/x whatever p is; the complement term still ranks predictions
    empty = torch.zeros(1, 1, 2, 2)
    assert float(tanimoto_complement_loss(torch.full_like(empty, 0.1), empty)) < \
        float(tanimoto_complement_loss(torch.full_like(empty, 0.9), empty))


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_every_named_loss_runs_and_ignores_unlabelled_pixels(activation):
    from geoseg.train.config import LOSSES
    from geoseg.train.losses import class_loss

    torch.manual_seed(0)
    y = torch.randint(0, 3, (2, 16, 16))
    y[:, :4] = IGNORE
    for name in LOSSES:
        logits = torch.randn(2, 3, 16, 16, requires_grad=True)
        loss = class_loss(name, 3, activation)(logits, y)
        loss.backward()
        assert torch.isfinite(loss) and logits.grad is not None, name
        # pixels without a label get no gradient (they may not teach the model anything)
        assert float(logits.grad[:, :, :4].abs().max()) == 0.0, name
        assert float(logits.grad[:, :, 4:].abs().max()) > 0.0, name


def test_validation_crops_hold_only_the_region(synth, tmp_path):
    from geoseg.train.validate import crop

    image, truth, _ = synth
    scene = load_scene(image, config(), labels=str(truth))
    region = Region(0, 96, 128, 96, 160)
    out = crop(scene, region, tmp_path)
    with rasterio.open(image) as src, rasterio.open(out) as got:
        assert got.transform == src.window_transform(region.window) and got.crs == src.crs
        assert np.array_equal(got.read(), src.read(window=region.window))
    assert crop(scene, Region(0, 0, 0, scene.height, scene.width), tmp_path) == image  # whole scenes as they are


def test_batches_depend_on_the_step_only_not_on_loader_threads(synth):
    image, truth, _ = synth
    cfg = config(augment={"flip": {}, "rot90": {}, "colour": {}, "scale_rotate": {}})
    scenes = [load_scene(image, cfg, labels=str(truth))]
    sampler = WindowSampler(scenes, [Region(0, 0, 0, scenes[0].height, scenes[0].width)], cfg, seed=2)
    one, four = sampler.batch(7, 6), sampler.batch(7, 6, threads=4)
    assert all(np.array_equal(one[k], four[k]) for k in one)
    assert not np.array_equal(one["image"], sampler.batch(8, 6)["image"])  # another step, other windows
