"""``--runtime``: ONNX Runtime and OpenVINO give torch's outputs, partition invariance holds per runtime, and
the exported graphs are cached in the user's cache folder (here: a temporary one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg import graph_cache, runtime
from geoseg.errors import BundleError, ConfigError
from geoseg.infer import infer
from geoseg.models import BundleMeta, build_model, load_bundle, save_bundle
from geoseg.models.bundle import BUNDLED_DIR
from geoseg.pipeline import InferConfig, load_pipeline
from geoseg.predict import Predictor, get_predictor
from geoseg.runtime import GraphPredictor, auto_candidates, ort_providers
from geoseg.synth import SynthSpec, write_scene
from tests.conftest import CLASSES, TINY_ARGS
from tests.test_infer import run as run_infer
from tests.test_models_bundle import invoke, user_error

GRAPH_RUNTIMES = ("onnxruntime", "openvino")
HELD_OUT_SEED = 4343  # training uses seeds 1000-1095 (pipelines/default.yaml)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One graph cache for the whole session, so each bundle is exported once."""
    return tmp_path_factory.mktemp("geoseg-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOSEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))


def test_graph_is_cached_under_xdg_and_rebuilt_when_stale(tiny_bundle: Path, cache_dir: Path) -> None:
    graph = graph_cache.cached_graph(tiny_bundle, 128)
    assert graph.parent == cache_dir / "geoseg" / "graphs"
    assert graph_cache.bundle_sha256(tiny_bundle)[:24] in graph.name and "-t128-" in graph.name
    assert not list(graph.parent.glob(".*tmp*")), "a temporary file was left behind"
    assert not list(BUNDLED_DIR.parent.rglob("*.onnx")), "a graph was written inside the package"
    stamp = graph.stat().st_mtime_ns
    assert graph_cache.cached_graph(tiny_bundle, 128) == graph and graph.stat().st_mtime_ns == stamp  # reused
    graph.write_bytes(graph.read_bytes()[:1000])  # a killed writer elsewhere, or a disk error
    assert graph_cache.cached_graph(tiny_bundle, 128) == graph
    assert graph.stat().st_size > 1000 and graph_cache._is_current(graph, graph_cache.graph_key(tiny_bundle, 128))


def test_a_changed_bundle_gets_a_new_graph(tmp_path: Path) -> None:
    from tests.conftest import write_tiny_bundle

    path = write_tiny_bundle(tmp_path / "b.safetensors", seed=1)
    first = graph_cache.graph_key(path, 128)
    write_tiny_bundle(path, seed=2)  # same path, new weights
    assert graph_cache.graph_key(path, 128) != first
    assert graph_cache.graph_key(path, 128) != graph_cache.graph_key(path, 256)


@pytest.mark.parametrize("name", GRAPH_RUNTIMES)
def test_heads_come_out_like_torch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    args = {**TINY_ARGS, "classes": 5}
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, heads=(("boundary", 1), ("distance", 1)),
                      tile=128, halo=32)
    path = save_bundle(tmp_path / "heads.safetensors", build_model("smp:Unet", **args), meta)
    tiles = np.random.default_rng(0).normal(size=(3, 3, 128, 128)).astype(np.float32)
    expected = Predictor(load_bundle(path), torch.device("cpu")).predict(tiles, 2)
    pred = get_predictor(str(path), "cpu", name, 128)
    assert isinstance(pred, GraphPredictor) and pred.runtime == name
    out = pred.predict(tiles, 2)
    assert out.shape == (3, 5, 128, 128)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    checks = graph_cache.read_checks(pred.graph)
    assert checks[f"{runtime.device_tag(pred.device)}/{name}/fp32"]["ok"] is True


@pytest.mark.parametrize("name", GRAPH_RUNTIMES)
def test_partition_invariance_per_runtime(name: str, make_scene, tiny_bundle: Path, tmp_path: Path) -> None:
    scene = make_scene(width=420, height=330)
    base = run_infer(scene, tmp_path, "a", tiny_bundle, block_size=64, workers=1, runtime=name)
    for tag, cfg in {"b": dict(block_size=200, workers=2), "c": dict(block_size=4096, workers=2),
                     "d": dict(block_size=128, workers=2, scheduler="processes")}.items():
        other = run_infer(scene, tmp_path, tag, tiny_bundle, runtime=name, **cfg)
        np.testing.assert_array_equal(other[0], base[0], err_msg=f"probabilities differ for {cfg}")
        np.testing.assert_array_equal(other[1], base[1], err_msg=f"classes differ for {cfg}")
        assert set(other[2]) == set(base[2]) and all(len(other[2][k]) == len(base[2][k]) for k in base[2])


def test_trained_bundle_same_outputs_per_runtime(tmp_path: Path) -> None:
    """The bundled default model on a scene it never saw: classes >= 99.9 % identical, probabilities 1e-3."""
    scene = tmp_path / "held_out.tif"
    write_scene(SynthSpec(640, 640, seed=HELD_OUT_SEED), scene)
    config = load_pipeline(Path(__file__).resolve().parent.parent / "pipelines" / "default.yaml")
    config = config.replace(tile=512, workers=2)  # a smaller tile than the bundle's keeps the test short
    outputs = {}
    for name in ("torch",) + GRAPH_RUNTIMES:
        infer(scene, None, config.replace(runtime=name), raster_out=tmp_path / f"{name}_c.tif",
              prob_out=tmp_path / f"{name}_p.tif")
        with rasterio.open(tmp_path / f"{name}_c.tif") as c, rasterio.open(tmp_path / f"{name}_p.tif") as p:
            outputs[name] = (c.read(1), p.read())
    classes, probs = outputs["torch"]
    assert len(np.unique(classes)) == 3, "the scene should show every class"
    for name in GRAPH_RUNTIMES:
        assert (outputs[name][0] == classes).mean() >= 0.999, name
        assert np.abs(outputs[name][1] - probs).max() <= 1e-3, name


def test_auto_takes_the_fastest_runtime_that_passed(tiny_bundle: Path) -> None:
    pred = runtime.runtime_predictor(tiny_bundle, "cpu", "auto", 128)
    graph = graph_cache.cached_graph(tiny_bundle, 128)
    tag = runtime.device_tag(torch.device("cpu"))
    checks = graph_cache.read_checks(graph)
    timed = {"torch": checks[f"{tag}/torch"]["seconds_per_tile"]}
    for name in auto_candidates(torch.device("cpu")):
        assert checks[f"{tag}/{name}/fp32"]["ok"], checks
        timed[name] = checks[f"{tag}/{name}/fp32"]["seconds_per_tile"]
    assert set(timed) == {"torch", *GRAPH_RUNTIMES}
    assert getattr(pred, "runtime", "torch") == min(timed, key=lambda k: timed[k])


def test_a_runtime_that_disagrees_is_refused(tiny_bundle: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    shared = graph_cache.cached_graph(tiny_bundle, 128)
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path))  # a cache of its own, holding the same graph
    (tmp_path / "graphs").mkdir()
    graph = tmp_path / "graphs" / shared.name
    graph.write_bytes(shared.read_bytes())
    assert graph_cache.cached_graph(tiny_bundle, 128) == graph
    tag = runtime.device_tag(torch.device("cpu"))
    graph_cache.write_check(graph, f"{tag}/torch", {"seconds_per_tile": 1.0})
    for name in GRAPH_RUNTIMES:  # as if the runtime had computed other classes on this machine
        graph_cache.write_check(graph, f"{tag}/{name}/fp32", {"ok": False, "max_prob_diff": 0.4,
                                                              "class_agreement": 0.9, "seconds_per_tile": 0.1})
    with pytest.raises(BundleError, match="differs from torch.*--runtime torch"):
        runtime.runtime_predictor(tiny_bundle, "cpu", "onnxruntime", 128)
    assert isinstance(runtime.runtime_predictor(tiny_bundle, "cpu", "auto", 128), Predictor)


def test_uninstalled_runtime_fails_in_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch, make_scene,
                                                                 tiny_bundle: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(runtime._NEEDS, "openvino", ("geoseg_no_such_module", "openvino"))
    scene = make_scene()
    result = invoke(["infer", scene, "--model", tiny_bundle, "--raster-out", tmp_path / "c.tif", "--runtime",
                     "openvino"])
    user_error(result, "--runtime openvino", "pip install 'geoseg[openvino]'")
    assert not (tmp_path / "c.tif").exists()
    assert "openvino" not in runtime.installed_runtimes()
    assert "openvino" not in auto_candidates(torch.device("cpu"))
    with pytest.raises(ConfigError, match="not a runtime"):
        runtime.check_runtime("tensorflow")
    with pytest.raises(ConfigError, match="name the runtime"):
        runtime.check_runtime("auto", "bf16")


def test_gpu_providers_and_auto_candidates() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda:1")
    assert ort_providers(["CPUExecutionProvider"], cpu, "fp32") == ["CPUExecutionProvider"]
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = ort_providers(both, gpu, "fp16", Path("/c"))
    assert [p[0] for p in providers[:2]] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert providers[0][1]["device_id"] == 1 and providers[0][1]["trt_fp16_enable"] is True
    assert providers[0][1]["trt_engine_cache_path"] == "/c" and providers[-1] == "CPUExecutionProvider"
    assert ort_providers(["CUDAExecutionProvider"], gpu, "fp32")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    with pytest.raises(ConfigError, match="no CUDA provider"):
        ort_providers(["CPUExecutionProvider"], gpu, "fp32")
    with pytest.raises(ConfigError, match="TensorRT"):
        ort_providers(["CUDAExecutionProvider"], gpu, "fp16")
    with pytest.raises(ConfigError, match="openvino"):
        ort_providers(["CPUExecutionProvider"], cpu, "bf16")
    assert auto_candidates(gpu, ["CPUExecutionProvider"]) == []
    assert auto_candidates(gpu, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["onnxruntime"]


def test_runtime_from_pipeline_and_cli(tmp_path: Path) -> None:
    recipe = tmp_path / "p.yaml"
    recipe.write_text("infer:\n  runtime: openvino\n")
    assert load_pipeline(recipe).runtime == "openvino"
    assert InferConfig().runtime == "torch"
    from geoseg.cli.options import PRECISION_NAMES, RUNTIME_NAMES

    assert RUNTIME_NAMES == runtime.RUNTIMES and PRECISION_NAMES == runtime.PRECISIONS
    result = invoke(["infer", "x.tif", "--runtime", "tensorflow"])
    assert result.exit_code == 2 and "auto" in result.output


def test_checks_json_is_plain_and_per_machine(tiny_bundle: Path) -> None:
    graph = graph_cache.cached_graph(tiny_bundle, 128)
    runtime.runtime_predictor(tiny_bundle, "cpu", "onnxruntime", 128)
    raw = json.loads(graph.with_suffix(".checks.json").read_text())
    assert all(key.startswith("cpu:") for key in raw)


def test_bf16_is_opt_in_and_checked() -> None:
    """The trained default model (its tile-512 graph is the one the test above exported) in bf16."""
    default = str(BUNDLED_DIR / "default.safetensors")
    tiles = np.random.default_rng(2).normal(size=(1, 3, 512, 512)).astype(np.float32)
    expected = Predictor(load_bundle(default), torch.device("cpu")).predict(tiles, 1)
    pred = get_predictor(default, "cpu", "openvino", 512, "bf16")
    assert isinstance(pred, GraphPredictor) and pred.precision == "bf16"
    out = pred.predict(tiles, 1)
    assert (out[:, :3].argmax(1) == expected[:, :3].argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(out[:, :3].sum(1), 1.0, atol=1e-2)
    record = graph_cache.read_checks(pred.graph)[f"{runtime.device_tag(pred.device)}/openvino/bf16"]
    assert record["ok"] and record["class_agreement"] >= runtime.MIN_CLASS_AGREEMENT_REDUCED


def test_bench_infer_compares_runtimes_run_by_run(tiny_bundle: Path, tmp_path: Path) -> None:
    result = invoke(["bench", "infer", "--size", "300", "--model", tiny_bundle, "--runtime", "torch,onnxruntime",
                     "--no-vectors", "--no-model-only", "--workdir", tmp_path])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["runtime"] for r in report["reports"]["onnxruntime"]] == ["onnxruntime"]
    assert report["reports"]["torch"][0]["ran"] == "torch"
    median = report["median"]["onnxruntime"]
    assert median["ran"] == "onnxruntime" and median["class_agreement_vs_first"] >= 0.999
    assert median["speedup_mpx_per_s"] > 0 and median["cpu_per_mpx_ratio"] > 0
