"""``geoseg bench model``: speed and cost per architecture on one tile size, printed as JSON.

CPU: tiles/s at batch 1 with one torch thread (how ``infer`` runs each Dask worker) and with all threads.
CUDA (when present): bf16 autocast, channels-last, batched tiles/s, and the fraction of the GPU's peak reached,
where the peak is measured in the same run with a large bf16 matmul (torch has no table of peak FLOPs).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from geoseg.models.cost import count_params, gflop_per_tile
from geoseg.models.registry import build_model

# name → (architecture, builder arguments): the architectures of the models issue at their published sizes
DEFAULT_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "smp:Unet/resnet34": ("smp:Unet", {"encoder_name": "resnet34"}),
    "smp:FPN/resnet34": ("smp:FPN", {"encoder_name": "resnet34"}),
    "smp:DeepLabV3Plus/resnet34": ("smp:DeepLabV3Plus", {"encoder_name": "resnet34"}),
    "smp:Segformer/mit_b0": ("smp:Segformer", {"encoder_name": "mit_b0"}),
    "unet-seresnext-aspp": ("unet-seresnext-aspp", {}),
    "resunet-a/d6": ("resunet-a", {"variant": "d6"}),
    "resunet-a/d7": ("resunet-a", {"variant": "d7"}),
}


def _time_per_call(fn: Any, repeat: int, min_seconds: float = 0.0) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times: list[float] = []
    while len(times) < repeat or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def cpu_tiles_per_s(model: torch.nn.Module, bands: int, tile: int, threads: int, repeat: int) -> float:
    """Batch-1 tiles per second on the CPU with ``threads`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(1, bands, tile, tile)
        with torch.inference_mode():
            return 1.0 / _time_per_call(lambda: model(x), repeat)
    finally:
        torch.set_num_threads(before)


def cuda_peak_tflops(n: int = 8192) -> float:
    """bf16 dense matmul TFLOP/s measured on this GPU: the ceiling the models are compared with."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)

    def run() -> None:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()

    return 10 * 2 * n**3 / _time_per_call(run, 5) / 1e12


def cuda_tiles_per_s(model: torch.nn.Module, bands: int, tile: int, batch: int, repeat: int) -> float:
    """bf16 autocast, channels-last, ``batch`` tiles per forward (as ``geoseg.predict`` runs on CUDA)."""
    model = model.to("cuda").to(memory_format=torch.channels_last)
    x = torch.randn(batch, bands, tile, tile, device="cuda").contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
        torch.cuda.synchronize()

    try:
        return batch / _time_per_call(run, repeat)
    finally:
        model.to("cpu")


def bench_model(names: list[str] | None = None, *, tile: int = 512, bands: int = 3, classes: int = 3,
                repeat: int = 3, all_threads: int | None = None, cuda: bool | None = None,
                cuda_batch: int = 16) -> dict[str, Any]:
    """One JSON-able record per architecture; ``names`` are keys of :data:`DEFAULT_MODELS` or registry names."""
    from geoseg.predict import cpu_count

    cuda = torch.cuda.is_available() if cuda is None else cuda
    all_threads = all_threads or cpu_count()
    peak = cuda_peak_tflops() if cuda else None
    rows = []
    for name in names or list(DEFAULT_MODELS):
        arch, args = DEFAULT_MODELS.get(name, (name, {}))
        model = build_model(arch, in_channels=bands, classes=classes, **args).eval()
        gflop = gflop_per_tile(model, bands, tile)
        row: dict[str, Any] = {
            "model": name, "arch": arch, "args": args, "params_m": round(count_params(model) / 1e6, 2),
            "gflop_per_tile": round(gflop, 1),
            "cpu_tiles_per_s_1_thread": round(cpu_tiles_per_s(model, bands, tile, 1, repeat), 3),
            "cpu_tiles_per_s_all_threads": round(cpu_tiles_per_s(model, bands, tile, all_threads, repeat), 3),
        }
        if peak is not None:  # on CUDA
            rate = cuda_tiles_per_s(model, bands, tile, cuda_batch, repeat)
            row["cuda_bf16_tiles_per_s"] = round(rate, 1)
            row["cuda_fraction_of_peak"] = round(rate * gflop / 1e3 / peak, 3)
        rows.append(row)
    return {"bench": "model", "tile": tile, "bands": bands, "batch_cpu": 1, "threads_all": all_threads,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "cuda_peak_bf16_tflops":
            round(peak, 1) if peak else None, "models": rows}
