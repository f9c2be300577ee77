"""``geoseg bench footprints`` and ``geoseg bench tta`` on tiny inputs: each prints one JSON object with the keys
the README's Benchmarks figures are read from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import main


def _bench(*args: str) -> dict:
    res = CliRunner().invoke(main, ["bench", *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads(res.output.strip().splitlines()[-1])


def test_bench_footprints_scores_every_prediction(tmp_path: Path) -> None:
    r = _bench("footprints", str(tmp_path), "7", "--size", "256")
    assert r["bench"] == "footprints" and r["seeds"] == [7] and r["tta"] is None
    installed = importlib.util.find_spec("buildingregulariser") is not None
    assert r["buildingregulariser"]["available"] is installed  # the optional reference says whether it ran
    names = {f"{src}_{outline}" for src in ("single", "raster") for outline in ("raw", "plain", "reg")}
    names |= {"single_br", "raster_br"} if installed else set()
    (row,) = r["scenes"]
    assert row["seed"] == 7 and set(row) - {"seed"} == names == set(r["aggregate"])
    for name in names:
        pooled = r["aggregate"][name]
        assert pooled["truth"] > 0 and 0 <= pooled["f1"] <= 1 and pooled["rect_matched"] <= pooled["matched"]
        assert 0 <= pooled["rect_right4"] <= pooled["rect_right"] <= 1
        # one scene: the pooled figures are that scene's own
        assert {k: pooled[k] for k in row[name]} == pytest.approx(row[name], abs=1e-4)
    assert (tmp_path / "s7_temperate_labels.tif").exists()  # the scene is kept for the next run


def test_bench_tta_reports_cost_and_scores_per_view_and_resumes(tiny_bundle: Path, tmp_path: Path) -> None:
    args = ("tta", str(tmp_path), "--size", "128", "--look", "arid", "--seed", "5", "--views", "1", "--views", "4",
            "--model", str(tiny_bundle), "--workers", "1")
    r = _bench(*args)
    assert r["bench"] == "tta" and set(r["views"]) == {"1", "4"}
    assert [(run["scene"], run["tta"]) for run in r["runs"]] == [("arid_5", 1), ("arid_5", 4)]
    one, four = r["views"]["1"], r["views"]["4"]
    assert one["predict_cpu_s_per_mpx"] > 0 and one["predict_cpu_ratio"] == 1.0
    assert four["predict_cpu_ratio"] == pytest.approx(four["predict_cpu_s_per_mpx"] / one["predict_cpu_s_per_mpx"],
                                                      abs=2e-3)
    for view in (one, four):
        assert "building" in view["aggregate"] and 0 <= view["aggregate"]["building"]["pixel_iou"] <= 1
    assert (tmp_path / "t4" / "arid_5_pred.gpkg").exists() and (tmp_path / "t4" / "arid_5_truth.gpkg").exists()
    assert _bench(*args) == r  # a second run finds every run in the folder and reports the same figures
