"""The synthetic scene generator: deterministic, window-invariant, and its pixels agree with its vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import geometry_mask
from rasterio.windows import Window

from geoseg.cli.synth_cmd import synth
from geoseg.errors import ConfigError, OutputError
from geoseg.synth import LAYERS, SynthSpec, label_window, make_truth, render_window, write_scene


@pytest.fixture(scope="module")
def spec() -> SynthSpec:
    return SynthSpec(384, 320, seed=3)


@pytest.fixture(scope="module")
def truth(spec: SynthSpec) -> dict:
    return make_truth(spec)


def test_truth_layers_and_columns(spec: SynthSpec, truth: dict) -> None:
    assert set(truth) == set(LAYERS)
    b = truth["buildings"]
    assert len(b) > 20 and b["id"].is_unique and set(b["class"]) == {"building"}
    assert set(truth["roads"]["class"]) == {"road"} and len(truth["roads"]) > 0
    assert set(truth["roads"].geom_type) == {"Polygon"} and set(b.geom_type) == {"Polygon"}
    assert set(truth["road_centerlines"].geom_type) == {"LineString"}
    assert all(g.crs == spec.crs for g in truth.values())
    assert shapely.is_valid(b.geometry.values).all()
    assert not shapely.intersects(b.union_all(), truth["roads"].union_all().buffer(-1e-6))


def test_deterministic(spec: SynthSpec, truth: dict) -> None:
    again = make_truth(SynthSpec(384, 320, seed=3))
    assert all(truth[k].geom_equals_exact(again[k], 0).all() for k in LAYERS)
    win = Window(0, 0, 128, 96)
    assert np.array_equal(render_window(spec, truth, win), render_window(SynthSpec(384, 320, seed=3), again, win))
    other = SynthSpec(384, 320, seed=4)
    assert not np.array_equal(render_window(spec, truth, win), render_window(other, make_truth(other), win))


@pytest.mark.parametrize("extra", [{}, {"dtype": "uint16", "nodata_border": 9, "bands": 4}])
def test_window_invariance(extra: dict) -> None:
    spec = SynthSpec(300, 260, seed=5, **extra)
    truth = make_truth(spec)
    whole = render_window(spec, truth, Window(0, 0, 300, 260))
    for col, row, w, h in [(0, 0, 77, 51), (37, 50, 120, 100), (250, 200, 50, 60), (1, 129, 256, 3)]:
        part = render_window(spec, truth, Window(col, row, w, h))
        assert np.array_equal(part, whole[:, row:row + h, col:col + w]), (col, row)


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rasterio 1.4 + affine 3.1
def test_labels_agree_with_vectors(spec: SynthSpec, truth: dict) -> None:
    lab = label_window(truth, spec.transform, (spec.height, spec.width))
    px_area = spec.gsd**2
    assert abs((lab == 1).sum() * px_area / truth["buildings"].area.sum() - 1) < 0.03
    road_area = truth["roads"].union_all().difference(truth["buildings"].union_all()).area
    assert abs((lab == 2).sum() * px_area / road_area - 1) < 0.03
    # a sub-window labelled with its own transform is the same slice
    win = Window(40, 30, 100, 90)
    sub = label_window(truth, rasterio.windows.transform(win, spec.transform), (90, 100))
    assert np.array_equal(sub, lab[30:120, 40:140])


def test_terraced_houses_touch(truth: dict) -> None:
    g = truth["buildings"].geometry.values
    pairs = shapely.STRtree(g).query(g, predicate="touches")
    assert pairs.shape[1] >= 6  # several shared walls (each counted twice)
    assert (truth["buildings"]["kind"] == "terrace").sum() >= 4


def _party_wall_contrast(spec: SynthSpec) -> np.ndarray:
    """Per wall shared by two terraced units (rows: line, tone): the mean brightness within 0.4 m of the wall
    against the two roofs 1.2-2.5 m away on either side, and the two roofs against each other (relative)."""
    truth = make_truth(spec)
    img = render_window(spec, truth, Window(0, 0, spec.width, spec.height)).astype(float).mean(0)
    b = truth["buildings"]
    g = b.geometry.values[np.flatnonzero(b["kind"].to_numpy() == "terrace")]

    def mean(geom: shapely.Geometry) -> float:
        m = ~geometry_mask([geom], (spec.height, spec.width), spec.transform)
        return float(img[m].mean()) if m.sum() >= 3 else np.nan

    out = []
    for a, c in zip(*shapely.STRtree(g).query(g, predicate="touches")):
        wall = shapely.intersection(g[a], g[c])
        if a > c or wall.length < 4:
            continue
        line = shapely.LineString(shapely.get_coordinates(shapely.line_interpolate_point(
            wall, [1.0, wall.length - 1.0])))  # the wall without its ends
        ring = shapely.buffer(line, 2.5, cap_style="flat") - shapely.buffer(line, 1.2, cap_style="flat")
        sa, sc = mean(ring & g[a]), mean(ring & g[c])
        out.append((abs(mean(shapely.buffer(line, 0.4, cap_style="flat")) - (sa + sc) / 2), abs(sa - sc)))
        out[-1] = (out[-1][0] / ((sa + sc) / 2), out[-1][1] / ((sa + sc) / 2))
    res = np.array(out)
    return res[np.isfinite(res).all(axis=1)]


@pytest.mark.parametrize("look", ["classic", "random"])
def test_terraced_units_visible(look: str) -> None:
    """Adjacent terraced units differ along their shared wall in the image (party-wall lines, roof steps,
    chimneys, per-unit tone), strongly on some rows and weakly on others, as in real imagery."""
    c = _party_wall_contrast(SynthSpec(512, 512, seed=11, look=look))
    assert len(c) >= 20
    line = c[:, 0] > 0.05
    assert 0.25 <= line.mean() <= 0.95, line.mean()  # a line on many walls, not on every one
    assert (line | (c[:, 1] > 0.1)).mean() >= 0.5


def test_write_scene_profile(tmp_path: Path) -> None:
    spec = SynthSpec(320, 300, seed=1, crs="EPSG:3857", gsd=0.6, origin=(100.0, 200.0))
    out = tmp_path / "scene.tif"
    truth = write_scene(spec, out, block=256)
    with rasterio.open(out) as src:
        assert src.crs == rasterio.crs.CRS.from_epsg(3857) and src.transform == spec.transform
        assert src.block_shapes == [(256, 256)] * 3 and src.profile["compress"] == "deflate"
        assert src.dtypes == ("uint8",) * 3 and src.nodata is None
        assert np.array_equal(src.read(window=Window(200, 10, 90, 80)),
                              render_window(spec, truth, Window(200, 10, 90, 80)))
    layers = dict(pyogrio.list_layers(tmp_path / "scene_truth.gpkg"))
    assert layers == {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif", "scene_truth.gpkg"]


def test_geographic_and_rotated(tmp_path: Path) -> None:
    spec = SynthSpec(256, 256, seed=2, crs="EPSG:4326", gsd=5e-6, dtype="float32", rotation=20.0)
    truth = write_scene(spec, tmp_path / "geo.tif", tmp_path / "geo.gpkg")
    with rasterio.open(tmp_path / "geo.tif") as src:
        assert src.crs.is_geographic and src.transform == spec.transform
        img = src.read()
    assert img.dtype == np.float32 and 0 < img.min() and img.max() <= 1
    assert truth["roads"].total_bounds[0] > 1.99 and truth["roads"].total_bounds[3] < 48.01
    lab = label_window(truth, spec.transform, (256, 256))
    px_area = abs(spec.transform.determinant)
    assert (lab == 2).any()
    if len(truth["buildings"]):
        assert abs((lab == 1).sum() * px_area / shapely.area(truth["buildings"].geometry.values).sum() - 1) < 0.05


def test_overwrite_refused(tmp_path: Path) -> None:
    spec, out = SynthSpec(64, 64, seed=1), tmp_path / "s.tif"
    write_scene(spec, out)
    before = out.read_bytes()
    with pytest.raises(OutputError, match="use --overwrite") as err:
        write_scene(SynthSpec(64, 64, seed=2), out)
    assert "s.tif" in str(err.value) and out.read_bytes() == before
    write_scene(SynthSpec(64, 64, seed=2), out, overwrite=True)
    assert out.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """The scene, its truth and its labels are renamed into place together or not at all."""
    (tmp_path / "labels").mkdir()  # a folder where the label raster should go: its rename fails, last of all
    with pytest.raises(OutputError, match="cannot write the scene"):
        write_scene(SynthSpec(64, 64, seed=1), tmp_path / "s.tif", labels_out=tmp_path / "labels", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]
    assert not any((tmp_path / "labels").iterdir())


def test_same_bytes_and_nodata_border(tmp_path: Path) -> None:
    spec = SynthSpec(200, 180, seed=8, nodata_border=12, bands=5)
    write_scene(spec, tmp_path / "a.tif")
    write_scene(spec, tmp_path / "b.tif", block=256)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.nodata == 0 and src.count == 5 and src.descriptions[3] == "nir"
        img, mask = src.read(), src.dataset_mask()
    assert (img[:, :, :5] == 0).all() and (img[:, :, 20:] > 0).all()
    assert 0.03 < (mask == 0).mean() < 0.1  # a ragged band about 12 px wide
    lab = label_window(make_truth(spec), spec.transform, (180, 200))
    nir, red = img[3].astype(float), img[0].astype(float)
    assert nir[lab == 0].mean() > nir[lab == 2].mean() + 30  # vegetation is bright in NIR, asphalt is not
    assert nir[lab == 0].mean() > red[lab == 0].mean()


def test_bad_specs() -> None:
    with pytest.raises(ConfigError, match="dtype"):
        SynthSpec(10, 10, dtype="int8")
    with pytest.raises(ConfigError, match="degrees"):
        SynthSpec(10, 10, crs="EPSG:4326", gsd=0.5)
    with pytest.raises(ConfigError, match="CRS"):
        SynthSpec(10, 10, crs="EPSG:999999")
    empty = SynthSpec(32, 32, density=0)
    assert all(len(v) == 0 for v in make_truth(empty).values())
    assert render_window(empty, make_truth(empty), Window(0, 0, 32, 32)).shape == (3, 32, 32)


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "c.tif"
    runner = CliRunner()
    res = runner.invoke(synth, [str(out), "--size", "64", "--seed", "4", "--dtype", "uint16"])
    assert res.exit_code == 0, res.output
    assert out.exists() and (tmp_path / "c_truth.gpkg").exists()
    res = runner.invoke(synth, [str(out), "--width", "64", "--height", "48"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(synth, [str(out), "--width", "64", "--height", "48", "--overwrite", "--crs", "EPSG:4326"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        assert src.shape == (48, 64) and src.crs.is_geographic
