"""Looks and confusers of the synthetic generator: same truth under every look, window-invariant pixels, labels
that re-rasterise exactly from the written truth, confusers only on background, GSD-randomised training scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.errors import ConfigError
from geoseg.synth import LAYERS, SynthSpec, label_window, make_truth, render_window, write_scene
from geoseg.synth.confusers import KINDS, ON_ROAD
from geoseg.synth.looks import CLASSIC, HELD_OUT_LOOKS, LOOKS, TRAIN_LOOKS, random_look
from geoseg.synth.model import _model


def test_named_looks_are_disjoint_and_random_draws_only_training_looks() -> None:
    assert not set(TRAIN_LOOKS) & set(HELD_OUT_LOOKS) and "classic" not in TRAIN_LOOKS
    held_out_roofs = {tuple(np.round(r)) for look in HELD_OUT_LOOKS.values() for r in look.roofs}
    for seed in range(20):
        look = random_look(seed)
        assert look.name == "random" and 0 < look.shadow_len < 3 and look.confusers > 0
        assert not {tuple(np.round(r)) for r in look.roofs} & held_out_roofs
    with pytest.raises(ConfigError, match="look 'nope'"):
        SynthSpec(64, 64, look="nope")


@pytest.mark.parametrize("look", ["nordic", "random", "tropical"])
def test_truth_is_the_layout_whatever_the_look(look: str) -> None:
    base, other = make_truth(SynthSpec(320, 288, seed=11)), make_truth(SynthSpec(320, 288, seed=11, look=look))
    assert all(base[k].geom_equals_exact(other[k], 0).all() for k in LAYERS)
    spec = SynthSpec(320, 288, seed=11, look=look)
    win = Window(0, 0, 320, 288)
    assert not np.array_equal(render_window(spec, other, win), render_window(SynthSpec(320, 288, seed=11), base, win))


@pytest.mark.parametrize("look", ["nordic", "random", "arid"])
def test_looks_are_window_invariant(look: str) -> None:
    spec = SynthSpec(300, 260, seed=5 if look != "random" else 8, look=look)
    truth = make_truth(spec)
    whole = render_window(spec, truth, Window(0, 0, 300, 260))
    for col, row, w, h in [(0, 0, 77, 51), (37, 50, 120, 100), (250, 200, 50, 60), (1, 129, 256, 3)]:
        assert np.array_equal(render_window(spec, truth, Window(col, row, w, h)), whole[:, row:row + h, col:col + w])


def test_confusers_lie_on_background_only() -> None:
    spec = SynthSpec(512, 512, seed=21, look="tropical", gsd=0.5)
    mdl, truth = _model(spec), make_truth(spec)
    kinds = {KINDS[k] for k in mdl.conf_kind}
    assert {"parking", "pool", "car"} <= kinds, kinds
    to_map = spec.transform
    surfaces = mdl.confusers[(mdl.conf_kind != ON_ROAD) & (mdl.conf_kind != KINDS.index("path"))]
    in_map = shapely.transform(surfaces, lambda c: np.column_stack([to_map.a * c[:, 0] + to_map.b * c[:, 1] + to_map.c,
                                                                   to_map.d * c[:, 0] + to_map.e * c[:, 1] + to_map.f]))
    built = shapely.union_all(np.concatenate([truth["buildings"].geometry.values, truth["roads"].geometry.values]))
    assert not shapely.intersects(in_map, built).any()


def test_labels_rasterise_exactly_from_the_written_truth(tmp_path: Path) -> None:
    """The class raster the painter used is the truth GeoPackage (read back from disk) rasterised on the grid."""
    spec = SynthSpec(420, 330, seed=31, look="random", gsd=0.4, rotation=7.0)
    write_scene(spec, tmp_path / "s.tif", block=256, labels_out=tmp_path / "labels.tif")
    with rasterio.open(tmp_path / "labels.tif") as src:
        written, tf, shape = src.read(1), src.transform, (src.height, src.width)
    roads = pyogrio.read_dataframe(tmp_path / "s_truth.gpkg", layer="roads").geometry.values
    blds = pyogrio.read_dataframe(tmp_path / "s_truth.gpkg", layer="buildings").geometry.values
    again = rasterize([(g, 2) for g in roads] + [(g, 1) for g in blds], out_shape=shape, transform=tf, fill=0,
                      dtype="uint8")
    assert np.array_equal(written, again)
    assert (written == 1).sum() > 500 and (written == 2).sum() > 500
    assert np.array_equal(written, label_window(make_truth(spec), spec.transform, shape))


def test_training_scenes_are_resampled_to_the_model_gsd(tmp_path: Path) -> None:
    from geoseg.train.config import SynthData, TrainConfig
    from geoseg.train.synth_data import make_synth_scenes, scene_gsd

    s = SynthData(count=2, size=256, seed=50, look="random", gsd=(0.3, 1.0))
    cfg = TrainConfig(out=str(tmp_path / "m.safetensors"), synth=s, data_dir=str(tmp_path), gsd=0.5,
                      classes=({"name": "background"}, {"name": "building"}))
    gsds = [scene_gsd(s, seed, 0.5) for seed in range(50, 52)]
    assert all(0.3 <= g <= 1.0 for g in gsds) and len(set(gsds)) == 2
    for (image, truth), g in zip(make_synth_scenes(cfg), gsds):
        with rasterio.open(image) as src:
            assert abs(src.res[0] - 0.5) < 0.01 and abs(src.width * src.res[0] - 128) < 1, (g, src.res, src.width)
            lab = label_window({"buildings": pyogrio.read_dataframe(truth, layer="buildings")}, src.transform,
                               (src.height, src.width))
        area = pyogrio.read_dataframe(truth, layer="buildings").area.sum()
        if area > 200:
            assert abs((lab == 1).sum() * src.res[0] * src.res[1] / area - 1) < 0.06
    assert not list(tmp_path.glob("*_native.tif"))


def test_classic_is_the_default_look() -> None:
    assert SynthSpec(8, 8).look == "classic" and LOOKS["classic"] is CLASSIC and CLASSIC.confusers == 0
