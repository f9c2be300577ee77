"""``geoseg bench infer`` on a local process cluster: driver and worker CPU per Mpx, the projection to N cores
(checked against the run's own measured figures), and a model-only bound whose memory does not grow with the
number of tiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.bench import project_mpx_per_s
from geoseg.cli import main


def test_bench_infer_processes_splits_cpu_and_projects(tiny_bundle: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["bench", "infer", "--size", "256", "--model", str(tiny_bundle), "--scheduler",
                                    "processes", "--workers", "2", "--workdir", str(tmp_path), "--project-cores", "8",
                                    "--marginal-from", "128"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output.strip().splitlines()[-1])
    print(r)  # shown when an assertion fails
    mpx = 256 * 256 / 1e6
    # driver_cpu_s is rounded to 1 ms, the per-Mpx figure is computed before rounding
    assert r["driver_cpu_s"] > 0 and r["driver_cpu_s_per_mpx"] == pytest.approx(r["driver_cpu_s"] / mpx,
                                                                                 abs=0.0006 / mpx)
    assert r["worker_cpu_s"] > r["worker_model_cpu_s"] > 0  # the workers' process CPU holds their block stages
    nonmodel = (r["worker_cpu_s"] - r["worker_model_cpu_s"]) / mpx
    assert r["worker_nonmodel_cpu_s_per_mpx"] == pytest.approx(nonmodel, rel=1e-2)
    # where the non-model CPU went: its parts are measured, not derived from the total
    parts = r["worker_cpu_parts_s"]
    assert parts["task:run_block"] > r["worker_model_cpu_s"] and parts["event_loop"] > 0
    assert parts["task_threads"] + parts["event_loop"] + parts["other_threads"] <= r["worker_cpu_s"] * 1.05
    # the marginal: what 256² adds over 128², per Mpx it adds (the smaller run's own report comes with it)
    small, m = r["marginal_from_run"], r["marginal"]
    added = mpx - 128 * 128 / 1e6
    assert small["size"] == 128 and m["megapixels_added"] == pytest.approx(added, abs=0.01)
    for key, of in (("marginal_driver_cpu_s_per_mpx", "driver_cpu_s"),
                    ("marginal_worker_nonmodel_cpu_s_per_mpx", "worker_nonmodel_cpu_s")):
        assert m[key] == pytest.approx((r[of] - small[of]) / added, abs=0.002 / added)
    p = r["projection"]
    assert p["cores"] == 8 and p["model_rate"].startswith("measured")
    assert p["serial_mpx_s"] == pytest.approx(1 / r["driver_cpu_s_per_mpx"], rel=1e-2)
    assert p["parallel_mpx_s"] == pytest.approx(8 / r["worker_nonmodel_cpu_s_per_mpx"], rel=1e-2)
    assert p["model_mpx_s"] == pytest.approx(mpx / r["model_only_s"], rel=0.02)  # model_only_s is rounded to 1 ms
    terms = {k: p[k] for k in ("serial_mpx_s", "parallel_mpx_s", "model_mpx_s")}
    assert r["projected_mpx_per_s"] == p["projected_mpx_per_s"] == min(terms.values())
    assert p["limited_by"] == min(terms, key=lambda k: terms[k])

    # the same measured stages with a model rate given (a GPU's, say) and more cores
    fast = project_mpx_per_s(r["driver_cpu_s_per_mpx"], r["worker_nonmodel_cpu_s_per_mpx"], 1e6, 64)
    cpu_bound = min(1 / r["driver_cpu_s_per_mpx"], 64 / r["worker_nonmodel_cpu_s_per_mpx"])
    assert fast["projected_mpx_per_s"] == pytest.approx(cpu_bound, rel=1e-3) and fast["limited_by"] != "model_mpx_s"
    assert project_mpx_per_s(None, None, None, 16)["projected_mpx_per_s"] is None


MEMORY_PROBE = """
import json, resource, sys
from geoseg.bench import model_only_seconds
from geoseg.pipeline import InferConfig
config = InferConfig(model=sys.argv[1], tile=256, workers=2)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model_only_seconds(config, 8, 2)
before = peak()
model_only_seconds(config, 120, 2)
print(json.dumps({"before": before, "after": peak()}))
"""


def test_model_only_bound_does_not_keep_its_outputs(tiny_bundle: Path) -> None:
    """120 tiles of 256² after 8: keeping each result (its 192² cores, 3 classes, float32) would add 50 MB (the
    bound this replaces kept whole tiles: 1.7 times that)."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tiny_bundle)], capture_output=True, text=True,
                          check=True)
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    kept_mb = 112 * 3 * 192 * 192 * 4 / 2**20
    assert rss["after"] - rss["before"] < kept_mb / 4, rss


def test_memory_bench_model_reads_the_pattern_back() -> None:
    """The bench model's argmax is the pattern's class raster exactly, and its boundary head fires on the walls
    alone (noise included), so `bench memory` vectorises the synthetic truth's objects, not speckle."""
    import numpy as np

    from geoseg.memory_scene import COLOURS, WALL, linear_weights, pattern_image

    image = pattern_image(512, seed=5).astype(np.float64)
    x = (image / 255 - 0.5) / 0.25
    weights, biases = linear_weights()
    logits = np.einsum("kc,chw->khw", weights, x) + biases[:, None, None]
    colours = np.vstack([COLOURS, WALL])  # the painted class of each pixel: its nearest flat colour
    painted = np.argmin(((image[None] - colours[:, :, None, None]) ** 2).sum(1), axis=0)
    assert set(np.unique(painted)) == {0, 1, 2, 3}  # ground, roofs, roads and walls all present
    assert np.array_equal(logits[:3].argmax(0), np.array([0, 1, 2, 1])[painted])
    assert np.array_equal(logits[3] > 0, painted == 3)


@pytest.mark.slow
def test_bench_memory_reports_peaks_per_phase(tmp_path: Path) -> None:
    """Two sizes, each in its own process, on a scene mirrored from a 512² pattern: peak RSS overall and per
    phase, the objects of the pattern's truth, and the ratio of the two peaks."""
    res = CliRunner().invoke(main, ["bench", "memory", "--size", "512", "--size", "1024", "--pattern", "512",
                                    "--workers", "2", "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output.strip().splitlines()[-1])
    print(r)  # shown when an assertion fails
    small, large = r["runs"]
    assert (small["size"], large["size"]) == (512, 1024) and r["sizes"] == [512, 1024]
    for run in r["runs"]:
        phases = run["phase_tree_rss"]
        assert set(phases) == {"blocks", "reduce_tail", "assembly"} and phases["blocks"] and phases["assembly"]
        peaks = {k: v["peak_mb"] for k, v in phases.items() if v}
        assert all(v["start_mb"] <= v["peak_mb"] for v in phases.values() if v)
        assert run["peak_phase"] in peaks and peaks[run["peak_phase"]] == max(peaks.values())
        assert phases["blocks"]["start_mb"] == run["rss_at_start_mb"] <= max(peaks.values()) <= run["peak_tree_rss_mb"]
        assert run["peak_rss_mb"] >= run["rss_at_start_mb"] > 100  # this process has torch and GDAL loaded
        assert run["megapixels"] == pytest.approx(run["size"] ** 2 / 1e6, abs=1e-3)
        assert run["cpu_s"] > 0 and run["outputs_mb"] > 0 and run["tiles"] > 0
        assert all(run["objects"][k] > 0 for k in ("buildings", "roads", "road_centerlines"))
    # four mirrored copies of the pattern: up to four times its buildings (fewer where a building cut by the
    # pattern's edge joins its mirror image)
    assert 2 * small["objects"]["buildings"] < large["objects"]["buildings"] <= 4 * small["objects"]["buildings"]
    assert r["peak_rss_ratio"] == pytest.approx(large["peak_rss_mb"] / small["peak_rss_mb"], abs=1e-4)
    assert r["peak_tree_rss_ratio"] == pytest.approx(large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"], abs=1e-4)
