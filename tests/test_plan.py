"""The plan before work, progress lines for logs, fail-fast on empty declarations, the summary line (17.6, 17.14)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyogrio
import pytest
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.errors import SceneError
from geoseg.plan import check_declared, progress_lines
from geoseg.scene import open_scene
from geoseg.summary import summary_line


def test_progress_lines_estimate_then_every_period_then_done() -> None:
    now = [0.0]
    lines: list[str] = []
    update = progress_lines("geoseg: infer", lines.append, every_s=30.0, clock=lambda: now[0])
    for t, done in ((5, 100), (10, 200), (20, 300), (41, 500), (50, 600), (80, 900), (90, 1000)):
        now[0] = float(t)
        update(done, 1000)
    assert lines[0].startswith("geoseg: infer: estimate 50s for the scene at 0.00 Mpx/s (first 20.0% in 10s)")
    assert lines[1] == "geoseg: infer: 50% (0.0 of 0.0 Mpx), 0.00 Mpx/s, ETA 41s"  # 31 s after the estimate
    assert lines[2].startswith("geoseg: infer: 90%")
    assert lines[3].startswith("geoseg: infer: 100%") and lines[3].endswith("done in 1m30s")
    assert len(lines) == 4


def test_scene_declaring_no_pixels_fails_fast(make_scene: Any) -> None:
    info = open_scene(make_scene())
    check_declared(info)
    no_cols, no_rows = dataclasses.replace(info.grid, width=0), dataclasses.replace(info.grid, height=0)
    for empty in (dict(grid=no_cols), dict(grid=no_rows), dict(count=0)):
        with pytest.raises(SceneError, match="no pixels to segment"):
            check_declared(dataclasses.replace(info, **empty))


def test_summary_line_leads_roads_with_centerline_km() -> None:
    line = summary_line(0.2624, {"buildings": 167, "roads": 2, "road_centerlines": 9},
                        {"buildings": 36_700.4, "roads": 31_756.0, "road_centerlines": 4_104.0},
                        {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString"})
    assert line == "scene 0.262 km²: 167 buildings (36,700 m²), road centerlines 4.10 km, 2 roads (31,756 m²)"


def test_summary_line_totals_match_the_written_layers(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.gpkg"
    result = CliRunner().invoke(main, ["infer", str(make_scene(width=300, height=260)), "--out", str(out), "--model",
                                       str(tiny_bundle), "--tile", "128", "--halo", "32"])
    assert result.exit_code == 0, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"scene {300 * 260 * 0.25 / 1e6:.3f} km²: "), line  # 300 x 260 px of 0.5 m
    frames = {layer: pyogrio.read_dataframe(out, layer=layer) for layer, kind in pyogrio.list_layers(out) if kind}
    buildings = frames["buildings"]
    assert f"{len(buildings):,} buildings (" in line
    assert f"road centerlines {frames['road_centerlines']['length_m'].sum() / 1e3:,.2f} km" in line
    assert line.index("road centerlines") < line.index(" roads (")
