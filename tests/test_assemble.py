"""The GeoPackage assembly: every layer's features in one SQLite transaction, the same rows GDAL writes."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from geoseg.assemble import assemble_vectors, bulk_insert
from geoseg.export import VectorSink
from geoseg.parts import VECTORS, load_frames, save_frames

LAYERS = {"buildings": "Polygon", "road_centerlines": "LineString"}
CRS = "EPSG:32631"


def change_counter(gpkg: Path) -> int:
    """SQLite's file change counter (header bytes 24-27): one more for every committed write transaction."""
    with open(gpkg, "rb") as f:
        f.seek(24)
        return int(struct.unpack(">I", f.read(4))[0])


def write_parts(folder: Path, n_parts: int, per_part: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    (folder / VECTORS).mkdir(parents=True, exist_ok=True)
    names = []
    for p in range(n_parts):
        x, y = 500_000 + p * 100 + rng.random(per_part) * 90, 5_000_000 + rng.random(per_part) * 90
        polys = shapely.buffer(shapely.points(x, y), 1 + rng.random(per_part), quad_segs=2)
        lines = shapely.linestrings(np.stack([np.stack([x, y], 1), np.stack([x + 3, y + 2], 1)], 1))
        ids = np.arange(p * per_part, (p + 1) * per_part)
        orientation = np.where(rng.random(per_part) < 0.2, np.nan, rng.random(per_part))  # NaN: stored as NULL
        frames = {"buildings": [gpd.GeoDataFrame(
                      {"id": ids, "class": "building", "area_m2": shapely.area(polys), "perimeter_m":
                       shapely.length(polys), "score": rng.random(per_part), "orientation": orientation},
                      geometry=polys, crs=CRS)],
                  "road_centerlines": [gpd.GeoDataFrame(
                      {"id": ids, "class": "road", "length_m": shapely.length(lines), "width_m": rng.random(per_part),
                       "score": rng.random(per_part)}, geometry=lines, crs=CRS)]}
        names.append(f"b_{p:05d}_00000.arrays")
        save_frames(folder / VECTORS / names[-1], frames)  # type: ignore[arg-type]
    return names


def assembled(folder: Path, parts: list[str]) -> Path:
    ((tmp, _),) = assemble_vectors(folder, folder.parent / "out.gpkg", parts, LAYERS, CRS, {})
    return tmp


def test_one_transaction_whatever_the_number_of_features(tmp_path: Path) -> None:
    """The features cost one commit however many parts and features there are (GDAL's appends committed
    every 5000 features and several times per open), and a reader sees the same features, fids, spatial index
    and extents as GDAL's own writer gives."""
    small = assembled(tmp_path / "one", write_parts(tmp_path / "one", 1, 1))
    many_parts = write_parts(tmp_path / "many", 12, 1000)
    many = assembled(tmp_path / "many", many_parts)
    assert change_counter(many) == change_counter(small)

    ref = VectorSink(tmp_path / "ref.gpkg", LAYERS, CRS)  # GDAL writes the same parts
    for name in many_parts:
        for layer, (wkb, cols) in load_frames(tmp_path / "many" / VECTORS / name).items():
            ref.add_wkb(layer, wkb, cols)
    ((gdal, _),) = ref.finish()
    for layer in LAYERS:
        ours = pyogrio.read_dataframe(many, layer=layer, fid_as_index=True)
        theirs = pyogrio.read_dataframe(gdal, layer=layer, fid_as_index=True)
        assert len(ours) == 12_000 and ours.index[0] == 1
        assert ours.equals(theirs)
        assert pyogrio.read_info(many, layer=layer)["total_bounds"] == pytest.approx(
            pyogrio.read_info(gdal, layer=layer)["total_bounds"], abs=0, rel=0)
        with sqlite3.connect(many) as a, sqlite3.connect(gdal) as b:
            for sql in (f'SELECT fid, geom FROM "{layer}" ORDER BY fid',
                        f'SELECT * FROM "rtree_{layer}_geom" ORDER BY id',
                        "SELECT * FROM gpkg_ogr_contents ORDER BY table_name",
                        "SELECT type, name, sql FROM sqlite_master ORDER BY name"):
                assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), sql
            assert a.execute(f"SELECT rtreecheck('rtree_{layer}_geom')").fetchone() == ("ok",)
        window = (500_300, 5_000_000, 500_400, 5_000_100)  # the spatial index answers a window query
        assert len(pyogrio.read_dataframe(many, layer=layer, bbox=window)) == \
            len(pyogrio.read_dataframe(gdal, layer=layer, bbox=window)) > 0


def test_stopped_midway_leaves_no_feature(tmp_path: Path) -> None:
    """A failure in the middle of the parts (a lost worker, a bad part) rolls every layer back to empty, the
    index triggers in place."""
    folder = tmp_path / "parts"
    names = write_parts(folder, 3, 200)
    sink = VectorSink(tmp_path / "o.gpkg", LAYERS, CRS)
    with sqlite3.connect(sink.tmp) as db:
        schema = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()

    def chunks():  # type: ignore[no-untyped-def]
        for i, name in enumerate(names):
            if i == 2:
                raise OSError("part unreadable")
            yield from load_frames(folder / VECTORS / name).items()

    with pytest.raises(OSError, match="part unreadable"):
        bulk_insert(sink.tmp, {k: list(v) for k, v in sink.fields.items()}, chunks())
    with sqlite3.connect(sink.tmp) as db:
        assert db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == schema
        for layer in LAYERS:
            assert db.execute(f'SELECT count(*) FROM "{layer}"').fetchone() == (0,)
    assert bulk_insert(sink.tmp, {k: list(v) for k, v in sink.fields.items()},
                       (c for n in names for c in load_frames(folder / VECTORS / n).items())) == \
        {"buildings": 600, "road_centerlines": 600}
    sink.abort()
