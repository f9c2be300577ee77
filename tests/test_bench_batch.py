"""``geoseg bench batch``: both runs, their block-stage seconds and the model's own scaling, on a real local
process cluster with a small model (the figures themselves depend on the machine; their consistency does not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import main


@pytest.mark.slow
def test_bench_batch_reports_runs_and_the_models_own_scaling(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["bench", "batch", "--scenes", "2", "--size", "256", "--model", "tiny",
                                    "--device", "cpu", "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert [r["workers"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        stages = run["block_stage_s"]
        assert stages["predict"] > 0 and sum(stages.values()) <= run["workers"] * run["processing_s"]
        assert 0 < run["block_busy_fraction"] <= 1
    scaling = report["model_scaling"]
    assert scaling["forwards_per_s_1"] > 0 and scaling["forwards_per_s_2"] > 0
    assert scaling["model_speedup"] == pytest.approx(scaling["forwards_per_s_2"] / scaling["forwards_per_s_1"],
                                                     rel=0.01)
    assert report["speedup_of_model_speedup"] == pytest.approx(report["speedup"] / scaling["model_speedup"],
                                                               rel=0.01)
