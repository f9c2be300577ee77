"""Vector outputs an analyst opens directly: a valid GeoPackage with spatial indexes and default QGIS styles,
and the single-layer formats (FlatGeobuf, GeoParquet, GeoJSON) with the same features."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.infer import infer
from geoseg.pipeline import InferConfig
from tests.test_infer import linear_bundle

LAYERS = ("buildings", "roads", "road_centerlines")


@pytest.fixture(scope="module")
def bright_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Bright-red rectangles (buildings to the 1x1 'linear' model), two of them touching through a neck."""
    import rasterio
    from affine import Affine

    folder = tmp_path_factory.mktemp("export")
    data = np.full((3, 160, 190), 10, np.uint8)
    for r0, c0, r1, c1 in [(20, 30, 45, 70), (60, 120, 100, 160), (110, 5, 140, 25), (110, 60, 150, 90)]:
        data[0, r0:r1, c0:c1] = 250
    data[0, 120:140, 94:134] = 250  # a second house, joined to the previous one by a narrow neck
    data[0, 128:132, 90:94] = 250
    path = folder / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=190, height=160, count=3, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000)) as dst:
        dst.write(data)
    return path, linear_bundle(folder / "lin.safetensors")


def test_geopackage_is_valid_indexed_and_styled(bright_scene, tmp_path):
    scene, bundle = bright_scene
    out = tmp_path / "out.gpkg"
    infer(scene, out, InferConfig(model=str(bundle), block_size=64))
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        contents = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
        assert contents == {"buildings": "features", "roads": "features", "road_centerlines": "features",
                            "layer_styles": "attributes"}
        srs = {r[0] for r in db.execute("SELECT organization_coordsys_id FROM gpkg_spatial_ref_sys "
                                        "WHERE organization = 'EPSG'")}
        assert 32631 in srs
        used = {r[0] for r in db.execute("SELECT srs_id FROM gpkg_geometry_columns")}
        assert used == {32631}
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        geom = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
        assert all(f"rtree_{layer}_{geom[layer]}" in tables for layer in LAYERS)
        assert db.execute("SELECT count(*) FROM rtree_buildings_geom").fetchone()[0] == \
            db.execute("SELECT count(*) FROM buildings").fetchone()[0] > 0
        styles = db.execute("SELECT f_table_name, f_geometry_column, styleName, styleQML, styleSLD, useAsDefault "
                            "FROM layer_styles").fetchall()
    assert sorted(s[0] for s in styles) == sorted(LAYERS)
    by_layer = {s[0]: s for s in styles}
    assert all(s[5] == 1 and s[1] == geom[s[0]] and s[3].startswith("<!DOCTYPE qgis") for s in styles)
    assert "227,26,28" in by_layer["buildings"][3]                  # the bundle's building colour #e31a1c
    assert "SimpleLine" in by_layer["road_centerlines"][3] and "SimpleFill" in by_layer["roads"][3]
    found = gpd.read_file(out, layer="buildings")
    assert len(found) == 5  # four rectangles, the joined pair split in two
    assert {"id", "class", "area_m2", "perimeter_m", "score", "orientation"} <= set(found.columns)
    assert found["id"].is_unique and found.is_valid.all()


@pytest.mark.parametrize("ext", [".fgb", ".parquet", ".geojson"])
def test_single_layer_formats_one_file_per_layer(bright_scene, tmp_path, ext):
    scene, bundle = bright_scene
    ref = tmp_path / "ref.gpkg"
    infer(scene, ref, InferConfig(model=str(bundle), block_size=64))
    out = tmp_path / f"out{ext}"
    summary = infer(scene, out, InferConfig(model=str(bundle), block_size=64))
    assert sorted(summary.outputs) == sorted(str(tmp_path / f"out_{layer}{ext}") for layer in LAYERS)
    read = gpd.read_parquet if ext == ".parquet" else gpd.read_file
    got, want = read(tmp_path / f"out_buildings{ext}"), gpd.read_file(ref, layer="buildings")
    assert got.crs == want.crs and len(got) == len(want) == 5
    assert sorted(got["id"]) == sorted(want["id"])
    a = sorted(shapely.to_wkb(shapely.normalize(got.geometry.values)))
    b = sorted(shapely.to_wkb(shapely.normalize(want.geometry.values)))
    assert a == b
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_vector_options(bright_scene, tmp_path):
    scene, bundle = bright_scene
    base = ["infer", str(scene), "--model", str(bundle), "--block-size", "64", "-q"]
    res = CliRunner().invoke(main, base + ["--out", str(tmp_path / "a.gpkg"), "--no-instance-split",
                                           "--regularize", "--no-holes"])
    assert res.exit_code == 0, res.output
    assert len(gpd.read_file(tmp_path / "a.gpkg", layer="buildings")) == 4  # the joined pair stays one
    res = CliRunner().invoke(main, base + ["--out", str(tmp_path / "a.shp")])
    assert res.exit_code == 1 and "unknown vector format .shp" in res.output and "Traceback" not in res.output


def test_boundary_head_reaches_the_vectoriser(tmp_path, make_scene):
    """A bundle with boundary and distance heads: infer hands them to the instance split (real smp model)."""
    import torch

    from geoseg.models import BundleMeta, build_model, save_bundle
    from tests.conftest import CLASSES, TINY_ARGS

    torch.manual_seed(3)
    args = {**TINY_ARGS, "classes": 5}
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, heads=(("boundary", 1), ("distance", 1)),
                      tile=128, halo=32)
    bundle = save_bundle(tmp_path / "heads.safetensors", build_model("smp:Unet", **args), meta)
    scene = make_scene(width=200, height=150)
    summary = infer(scene, tmp_path / "h.gpkg", InferConfig(model=str(bundle), block_size=64))
    frames = {layer: gpd.read_file(tmp_path / "h.gpkg", layer=layer) for layer in LAYERS}
    assert summary.objects == {layer: len(f) for layer, f in frames.items()}
    assert all(f.is_valid.all() for f in frames.values())


def test_sink_creates_typed_layers_up_front_and_flushes_big_geometries_early(tmp_path):
    """Every layer exists (with its final field types) before the first feature; a batch of many-vertex
    polygons is written long before 5000 features, so the writer never holds a scene's worth of roads."""
    import pyogrio

    from geoseg.export import VectorSink

    sink = VectorSink(tmp_path / "out.gpkg", {"buildings": "Polygon", "road_centerlines": "LineString"},
                      "EPSG:32631", flush_coords=2_000)
    assert sink.tmp.exists() and not (tmp_path / "out.gpkg").exists()
    info = pyogrio.read_info(sink.tmp, layer="buildings")
    fields = dict(zip(info["fields"], info["dtypes"]))
    assert fields == {"id": "int64", "class": "object", "area_m2": "float64", "perimeter_m": "float64",
                      "score": "float64", "orientation": "float64"}
    assert pyogrio.read_info(sink.tmp, layer="road_centerlines")["fields"].tolist() == \
        ["id", "class", "length_m", "width_m", "score"]
    rings = shapely.buffer(shapely.points(np.arange(10.0) * 100 + 500000, np.full(10, 5e6)), 20, quad_segs=64)
    frame = gpd.GeoDataFrame({"id": np.arange(10), "class": "building", "area_m2": 1.0, "perimeter_m": 1.0,
                              "score": 0.5, "orientation": 0.0}, geometry=rings, crs="EPSG:32631")
    sink.add("buildings", frame.iloc[:5])  # 5 x 257 vertices: under the limit, still pending
    assert sink.written["buildings"] == 0 and len(sink.pending["buildings"]) == 1
    sink.add("buildings", frame.iloc[5:])  # 2570 vertices: written now, far below 5000 features
    assert sink.written["buildings"] == 10 and not sink.pending["buildings"]
    sink.commit()
    back = gpd.read_file(tmp_path / "out.gpkg", layer="buildings")
    assert back["id"].dtype == np.int64 and back["id"].tolist() == list(range(10))
    assert len(gpd.read_file(tmp_path / "out.gpkg", layer="road_centerlines")) == 0
