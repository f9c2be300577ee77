"""``--runtime``: run a bundle's exported graph with ONNX Runtime or OpenVINO, behind the torch predictor's interface.

On CPU the model is the run, and these runtimes compute the same probabilities as eager torch (within 1e-5)
in less time. The graph comes from :mod:`geoseg.graph_cache` (exported once per bundle and tile size). Before a
runtime is trusted on a bundle it is checked against torch on this machine, once, and the result kept beside
the graph: ``auto`` then takes the fastest runtime that passed, and an explicit runtime that fails is an error.

Threads follow the torch predictor's rule: one intra-op thread per calling (Dask) thread, so runtime threads x
Dask threads never exceed the cores and every tile sees the same kernels whatever the worker count.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch

from geoseg.errors import BundleError, ConfigError, GeosegError
from geoseg.models.bundle import Bundle, load_bundle

if TYPE_CHECKING:
    from geoseg.predict import CoreBatch, TileBatch

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")
# runtime -> (module it needs, the extra that installs it with the ONNX exporter)
_NEEDS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
# what a check must show before a runtime replaces torch: fp32 is held to the same outputs. Reduced precision
# (opt-in only, never picked by auto) to the same classes on 99 % of the check tiles' pixels: they are seeded
# noise, where near-ties are far more common than on imagery (README, Benchmarks: its held-out IoU)
MAX_PROB_DIFF = 1e-3
MIN_CLASS_AGREEMENT = 0.999
MIN_CLASS_AGREEMENT_REDUCED = 0.99
CHECK_SEED = 19
LOG = logging.getLogger("geoseg")

Runner = Callable[[np.ndarray], np.ndarray]


def _missing(runtime: str) -> str | None:
    """The pip command that would install ``runtime``, or None when it (and the exporter) is importable."""
    module, extra = _NEEDS[runtime]
    for name in (module, "onnx", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            return f"pip install 'geoseg[{extra}]'"
    return None


def installed_runtimes() -> list[str]:
    """The runtimes this environment can run (torch always)."""
    return ["torch"] + [r for r in _NEEDS if _missing(r) is None]


def check_runtime(runtime: str, precision: str = "fp32") -> None:
    """Fail in one line, before any compute, on an unknown or uninstalled runtime or precision."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: not a runtime; use one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: not a precision; use one of {', '.join(PRECISIONS)}")
    if runtime in _NEEDS and (hint := _missing(runtime)):
        raise ConfigError(f"--runtime {runtime}: {runtime} is not installed; {hint}")
    if precision != "fp32" and runtime == "auto":
        raise ConfigError(f"--precision {precision}: name the runtime too (auto only picks exact runtimes), "
                          "e.g. --runtime openvino --precision bf16")


def ort_providers(available: list[str], device: torch.device, precision: str,
                  cache: Path | None = None) -> list[Any]:
    """ONNX Runtime execution providers for ``device``: TensorRT, then CUDA, on a GPU; the CPU provider last."""
    if device.type != "cuda":
        if precision != "fp32":
            raise ConfigError(f"--precision {precision}: onnxruntime runs fp32 on CPU; use --runtime openvino "
                              f"--precision {precision}")
        return ["CPUExecutionProvider"]
    index = device.index or 0
    out: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        trt: dict[str, Any] = {"device_id": index}
        if precision != "fp32":  # only when asked: older providers reject the bf16 key
            trt[f"trt_{precision}_enable"] = True
        if cache is not None:  # TensorRT builds its engine once per graph, not once per run
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
        out.append(("TensorrtExecutionProvider", trt))
    elif precision != "fp32":
        raise ConfigError(f"--precision {precision}: onnxruntime needs its TensorRT provider for reduced precision "
                          "on a GPU; install onnxruntime-gpu with TensorRT, or use --runtime torch (bf16 autocast)")
    if "CUDAExecutionProvider" in available:
        out.append(("CUDAExecutionProvider", {"device_id": index}))
    if not out:
        raise ConfigError(f"--device {device}: this onnxruntime has no CUDA provider; pip install onnxruntime-gpu, "
                          "or use --runtime torch")
    return out + ["CPUExecutionProvider"]


def _ort_runner(graph: Path, device: torch.device, precision: str, threads: int = 1) -> Runner:
    import onnxruntime as ort

    from geoseg.graph_cache import cache_root

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 1: run() executes on the calling thread, and only there
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ort_providers(ort.get_available_providers(), device, precision, cache_root() / "tensorrt")
    session = ort.InferenceSession(str(graph), options, providers=providers)
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:  # session.run is thread-safe
        return _joined(session.run(None, {name: batch}))

    return run


def _ov_runner(graph: Path, device: torch.device, precision: str, threads: int = 1) -> Runner:
    import openvino as ov

    from geoseg.graph_cache import cache_root

    if device.type != "cpu":
        raise ConfigError(f"--device {device}: the openvino runtime runs on CPU here; use --device cpu, or "
                          "--runtime onnxruntime/torch on a GPU")
    core = ov.Core()
    source = core.read_model(str(graph))
    hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
    # one stream of one thread per calling thread; no pinning (Dask threads, not OpenVINO, own the cores); the
    # compiled kernels are cached beside the graph
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": hint,
              "ENABLE_CPU_PINNING": False, "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(cache_root() / "openvino")}
    local = threading.local()
    lock = threading.Lock()

    def request(shape: tuple[int, ...]) -> Any:  # a compiled model per thread and batch shape (static is faster)
        cache = local.__dict__.setdefault("requests", {})
        if shape not in cache:
            with lock:
                model = source.clone()
                model.reshape({model.inputs[0].get_any_name(): list(shape)})
                cache[shape] = core.compile_model(model, "CPU", config).create_infer_request()
        return cache[shape]

    def run(batch: np.ndarray) -> np.ndarray:
        req = request(batch.shape)
        req.infer({0: batch})
        return _joined([req.get_output_tensor(i).data.copy() for i in range(len(req.model_outputs))])

    return run


def _joined(outputs: list[np.ndarray]) -> np.ndarray:
    """The graph's outputs (classes, then heads when present) as one array, like the torch predictor's."""
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=1)


_RUNNERS: dict[str, Callable[[Path, torch.device, str, int], Runner]] = {"onnxruntime": _ort_runner,
                                                                         "openvino": _ov_runner}


@dataclass
class GraphPredictor:
    """The torch predictor's interface (``bundle``, ``device``, ``predict``) over an exported graph."""

    bundle: Bundle
    device: torch.device
    runtime: str
    graph: Path
    precision: str = "fp32"
    threads: int = 1  # intra-op threads per call; infer keeps 1 (Dask threads fill the cores), benchmarks vary it
    run: Runner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.run = _RUNNERS[self.runtime](self.graph, self.device, self.precision, self.threads)

    def predict(self, tiles: np.ndarray, batch_size: int) -> np.ndarray:
        """Probabilities ``(n, outputs, t, t)`` for normalised tiles ``(n, bands, t, t)``; the last batch is
        padded to ``batch_size`` as the torch predictor does, so every tile runs the same kernels."""
        n = tiles.shape[0]
        out = np.empty((n, self.bundle.meta.n_outputs) + tiles.shape[2:], np.float32)
        for i in range(0, n, batch_size):
            batch = np.ascontiguousarray(tiles[i:i + batch_size], np.float32)
            if len(batch) < batch_size:
                batch = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], np.float32)])
            out[i:i + batch_size] = self.run(batch)[:min(batch_size, n - i)]
        return out

    def feed(self, batches: Iterable[TileBatch], *, scale: float, halo: int, batch_size: int,
             want_probs: bool, tta: int = 1) -> Iterator[CoreBatch]:
        """:meth:`geoseg.predict.Predictor.feed` on CPU: raw tiles normalised with the torch predictor's own
        functions (the same input bits), the graph run (over ``tta`` views, :mod:`geoseg.tta`), then cores and
        class bytes as torch computes them."""
        from geoseg.predict import CoreBatch, class_argmax, norm_terms, normalise_tiles
        from geoseg.tta import averaged

        def graph(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.predict(x.numpy(), batch_size))

        meta, k = self.bundle.meta, len(self.bundle.meta.classes)
        gain, offset, upper = (torch.from_numpy(a) for a in norm_terms(scale, meta.mean, meta.std))
        for tiles, masks in batches:
            torch.set_num_threads(1)  # the torch steps around the graph follow the same thread rule
            with torch.inference_mode():
                valid = None if masks is None else torch.from_numpy(np.stack(masks))
                x = normalise_tiles(torch.from_numpy(np.stack(tiles)), valid, gain, offset, upper)
                probs = averaged(graph, x, tta)
                t = probs.shape[-1]
                cores = probs[:, :, halo:t - halo, halo:t - halo]
                classes = class_argmax(cores[:, :k])
            yield CoreBatch(classes.numpy(), cores.numpy() if want_probs else None)


def device_tag(device: torch.device) -> str:
    """Which machine a check was made on: the CPU model or the GPU name (a shared cache may span machines)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device.index or 0)}"
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    import platform

    return f"cpu:{names[0] if names else platform.machine()}"


def auto_candidates(device: torch.device, available_ort: list[str] | None = None) -> list[str]:
    """What ``auto`` tries besides torch: OpenVINO and ONNX Runtime on CPU; on CUDA, ONNX Runtime when it
    has a CUDA or TensorRT provider (each is then checked and timed against torch before it is chosen)."""
    installed = installed_runtimes()
    if device.type != "cuda":
        return [r for r in ("openvino", "onnxruntime") if r in installed]
    if "onnxruntime" not in installed:
        return []
    if available_ort is None:
        import onnxruntime as ort

        available_ort = ort.get_available_providers()
    gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(available_ort)
    return ["onnxruntime"] if gpu else []


def _seconds_per_tile(fn: Callable[[], Any], n_tiles: int, repeat: int = 2) -> float:
    """Best of ``repeat`` timed calls (after the caller's first, untimed one), per tile."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n_tiles


def compare(out: np.ndarray, ref: np.ndarray, n_classes: int) -> dict[str, float]:
    """Largest probability difference and the fraction of pixels whose class (argmax) is the same."""
    agree = (out[:, :n_classes].argmax(1) == ref[:, :n_classes].argmax(1)).mean()
    return {"max_prob_diff": float(np.abs(out - ref).max()), "class_agreement": float(agree)}


class _Checker:
    """Checks graph runtimes against the torch predictor on one batch of seeded tiles, once per machine."""

    def __init__(self, bundle: Bundle, device: torch.device, graph: Path, tile: int, precision: str) -> None:
        from geoseg.graph_cache import read_checks
        from geoseg.predict import default_batch_size

        self.bundle, self.device, self.graph, self.precision = bundle, device, graph, precision
        n = default_batch_size(device)
        rng = np.random.default_rng(CHECK_SEED)
        self.x = rng.standard_normal((n, bundle.meta.n_bands, tile, tile)).astype(np.float32)
        self.tag = device_tag(device)
        self.records = read_checks(graph)
        self.built: dict[str, GraphPredictor] = {}
        self._ref: np.ndarray | None = None

    def torch_record(self) -> dict[str, Any]:
        """torch's own time per tile here (measured with the reference when not stored yet)."""
        key = f"{self.tag}/torch"
        if key not in self.records:
            self.reference()
        return dict(self.records[key])

    def reference(self) -> np.ndarray:
        """torch's probabilities on the check tiles (fp32; on CPU, the torch predictor's own output)."""
        from geoseg.graph_cache import write_check
        from geoseg.predict import Predictor

        if self._ref is None:
            pred, n = Predictor(self.bundle, self.device), len(self.x)
            self._ref = _reference(self.bundle, self.device, self.x) if pred.cuda else pred.predict(self.x, n)
            key = f"{self.tag}/torch"
            if key not in self.records:
                self.records[key] = {"seconds_per_tile": _seconds_per_tile(lambda: pred.predict(self.x, n), n)}
                write_check(self.graph, key, self.records[key])
        return self._ref

    def record(self, runtime: str) -> dict[str, Any]:
        """The stored check of ``runtime`` here, made now if there is none (raises if it cannot even run)."""
        from geoseg.graph_cache import write_check

        key = f"{self.tag}/{runtime}/{self.precision}"
        if key in self.records:
            return dict(self.records[key])
        pred, n = self.predictor(runtime), len(self.x)
        rec = compare(pred.predict(self.x, n), self.reference(), len(self.bundle.meta.classes))
        if self.precision == "fp32":
            rec["ok"] = rec["class_agreement"] >= MIN_CLASS_AGREEMENT and rec["max_prob_diff"] <= MAX_PROB_DIFF
        else:
            rec["ok"] = rec["class_agreement"] >= MIN_CLASS_AGREEMENT_REDUCED
        rec["seconds_per_tile"] = _seconds_per_tile(lambda: pred.predict(self.x, n), n)
        self.records[key] = rec
        write_check(self.graph, key, rec)
        return dict(rec)

    def predictor(self, runtime: str) -> GraphPredictor:
        if runtime not in self.built:
            self.built[runtime] = GraphPredictor(self.bundle, self.device, runtime, self.graph, self.precision)
        return self.built[runtime]


def _reference(bundle: Bundle, device: torch.device, x: np.ndarray) -> np.ndarray:
    """fp32 probabilities on ``device`` without autocast (the torch predictor's CUDA path runs bf16)."""
    from geoseg.models.onnx_export import Probabilities

    module = Probabilities(bundle).to(device).eval()
    with torch.inference_mode():
        out = module(torch.from_numpy(x).to(device))
    parts = out if isinstance(out, tuple) else (out,)
    return np.concatenate([p.float().cpu().numpy() for p in parts], axis=1)


def runtime_predictor(bundle_path: str | Path | None, device: str, runtime: str, tile: int | None = None,
                      precision: str = "fp32") -> Any:
    """A predictor for ``runtime`` (``auto``: the fastest that passed its check here, else torch)."""
    from geoseg.graph_cache import cached_graph
    from geoseg.predict import Predictor, resolve_device

    check_runtime(runtime, precision)
    dev = resolve_device(device)
    bundle = load_bundle(bundle_path)
    candidates = [runtime] if runtime != "auto" else auto_candidates(dev)
    if runtime == "torch" or not candidates:
        return Predictor(bundle, dev)
    tile = tile or bundle.meta.tile
    try:
        graph = cached_graph(bundle.path or bundle_path or "default", tile)
    except BundleError as err:
        if runtime != "auto":
            raise
        LOG.warning("--runtime auto: %s; running torch", err)
        return Predictor(bundle, dev)
    checker = _Checker(bundle, dev, graph, tile, precision)
    if runtime != "auto":
        return _explicit(checker, runtime, tile)
    return _fastest(checker, candidates)


def _explicit(checker: _Checker, runtime: str, tile: int) -> GraphPredictor:
    try:
        rec = checker.record(runtime)
    except GeosegError:
        raise
    except Exception as err:  # noqa: BLE001 - each runtime raises its own types; one line for the user
        raise BundleError(f"{checker.bundle.path}: {runtime} cannot run this model: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; use --runtime torch") \
            from None
    if not rec["ok"]:
        raise BundleError(f"{checker.bundle.path}: {runtime} ({checker.precision}) differs from torch on this model "
                          f"at tile {tile} (max |dp| {rec['max_prob_diff']:.2g}, classes "
                          f"{100 * rec['class_agreement']:.2f} % equal); use --runtime torch")
    return checker.predictor(runtime)


def _fastest(checker: _Checker, candidates: list[str]) -> Any:
    from geoseg.predict import Predictor

    best, best_s = "torch", checker.torch_record()["seconds_per_tile"]
    for name in candidates:
        try:
            rec = checker.record(name)
        except Exception as err:  # noqa: BLE001 - auto skips a runtime that cannot run this model
            LOG.warning("--runtime auto: %s cannot run %s (%s); skipped", name, checker.bundle.path,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            continue
        if rec["ok"] and rec["seconds_per_tile"] < best_s:
            best, best_s = name, rec["seconds_per_tile"]
    LOG.info("--runtime auto: %s on %s", best, checker.tag)
    if best == "torch":
        return Predictor(checker.bundle, checker.device)
    return checker.predictor(best)
