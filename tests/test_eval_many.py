"""``geoseg eval --many``: per-scene rows and the pooled aggregate; expected values worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner
from shapely import box

from geoseg.cli import main
from geoseg.errors import ConfigError
from geoseg.evaluate_many import evaluate_many, find_pairs

X0, Y0 = 500_000.0, 5_000_000.0
CRS = "EPSG:32631"


def _gpkg(path: Path, buildings: list, kinds: list[str] | None = None) -> None:
    cols = {"kind": kinds} if kinds else {}
    gpd.GeoDataFrame(cols, geometry=buildings, crs=CRS).to_file(path, layer="buildings")
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 60, X0 + 60, Y0 - 54)], crs=CRS).to_file(path, layer="roads")


def _houses(n: int, y: float = 0.0) -> list:
    """Terraced houses 8 m wide, 10 m deep, touching, from x = 0."""
    return [box(X0 + 8 * i, Y0 - 20 - y, X0 + 8 * (i + 1), Y0 - 10 - y) for i in range(n)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    # scene a: 4 terraced houses, predicted perfectly. scene b: 4 terraced houses predicted as one merged row
    # (IoU of the row with any one house = 80 / 320 = 0.25: no match), plus a detached house predicted exactly.
    _gpkg(tmp_path / "a_truth.gpkg", _houses(4), ["terrace"] * 4)
    _gpkg(tmp_path / "a_pred.gpkg", _houses(4))
    detached = box(X0 + 40, Y0 - 40, X0 + 50, Y0 - 30)
    _gpkg(tmp_path / "b_truth.gpkg", _houses(4) + [detached], ["terrace"] * 4 + ["house"])
    _gpkg(tmp_path / "b_pred.gpkg", [box(X0, Y0 - 20, X0 + 32, Y0 - 10), detached])
    return tmp_path


def test_rows_and_pooled_aggregate(folder: Path) -> None:
    result = evaluate_many(folder)
    rows = {r["name"]: r for r in result["scenes"]}
    assert set(rows) == {"a", "b"}
    a, b = rows["a"]["building"], rows["b"]["building"]
    assert a["object_f1"] == 1.0 and a["terraced_split"] == 4 and a["object_mean_iou"] == pytest.approx(1.0)
    # b: 1 matched of 2 predicted and 5 true: P 0.5, R 0.2; no terraced house split
    assert (b["object_precision"], b["object_recall"], b["terraced_split"]) == (0.5, 0.2, 0)
    agg = result["aggregate"]["building"]
    # pooled: 5 matched of 6 predicted and 9 true: P 5/6, R 5/9, F1 2PR/(P+R) = 2/3; terraced 4 of 8 split
    assert agg["object_precision"] == pytest.approx(5 / 6) and agg["object_recall"] == pytest.approx(5 / 9)
    assert agg["object_f1"] == pytest.approx(2 / 3) and agg["terraced_split_rate"] == 0.5
    assert agg["pixel_iou"] == pytest.approx(1.0) and result["aggregate"]["road"]["pixel_iou"] == pytest.approx(1.0)


def test_manifest_and_cli(folder: Path) -> None:
    (folder / "m.csv").write_text("name,truth,pred\nfirst,a_truth.gpkg,a_pred.gpkg\n")
    assert [p.name for p in find_pairs(folder / "m.csv")] == ["first"]
    res = CliRunner().invoke(main, ["eval", "--many", str(folder), "--out", str(folder / "s.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((folder / "s.json").read_text())
    assert [r["name"] for r in out["scenes"]] == ["a", "b"]
    assert out["aggregate"]["building"]["terraced_split_rate"] == 0.5
    assert "ALL (pooled)" in res.output


def test_empty_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="_truth.gpkg"):
        find_pairs(tmp_path)
    res = CliRunner().invoke(main, ["eval", "--many", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
