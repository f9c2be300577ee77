"""``geoseg eval`` scores the classes the truth labels and says which it skipped."""

from __future__ import annotations

import json

from click.testing import CliRunner

from geoseg.cli import main
from tests.test_metrics_eval import TRUTH, _gpkg


def test_buildings_only_truth_works_without_classes(tmp_path):
    truth = _gpkg(tmp_path / "truth.gpkg", TRUTH)  # one layer: buildings
    pred = _gpkg(tmp_path / "pred.gpkg", TRUTH[:2])
    res = CliRunner().invoke(main, ["eval", "--pred", str(pred), "--truth", str(truth), "--resolution", "1"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout.strip().splitlines()[0])
    assert list(scores) == ["building"] and scores["building"]["object_matched"] == 2
    assert f"{truth}: no road labels (layer roads missing): not scored" in res.stderr


def test_truth_without_any_class_layer_is_one_line(tmp_path):
    truth = _gpkg(tmp_path / "truth.gpkg", TRUTH)
    res = CliRunner().invoke(main, ["eval", "--pred", str(truth), "--truth", str(truth), "--classes", "tree,car"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "has none of the class layers trees, cars (its layers: buildings" in lines[0]
