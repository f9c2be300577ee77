"""Batched model inference on a device; one model per worker process, shared by its threads."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoseg.models.bundle import Bundle, load_bundle

_CACHE: dict[tuple[str, str, str, int | None, str], "Predictor"] = {}
_LOCK = threading.Lock()


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when there is one; ``cuda:N`` and ``cpu`` are taken as given."""
    from geoseg.errors import ConfigError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device; use auto, cpu or cuda[:N]") from None


@dataclass
class Predictor:
    """A bundle's model placed on a device, run in eval + inference mode in fixed-size batches."""

    bundle: Bundle
    device: torch.device

    def __post_init__(self) -> None:
        self.model = self.bundle.model.to(self.device).eval()
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.softmax = self.bundle.meta.activation == "softmax"
        self.n_classes = len(self.bundle.meta.classes)

    def predict(self, tiles: np.ndarray, batch_size: int) -> np.ndarray:
        """Probabilities ``(n, outputs, t, t)`` float32 for normalised tiles ``(n, bands, t, t)``: the class
        channels first, then any extra heads (``BundleMeta.heads``).

        On CPU the last batch is padded to the full batch size: with one intra-op thread, oneDNN then gives
        every tile bit-identical results whatever block or batch position it falls in (partition invariance).
        """
        if not self.cuda:
            # OpenMP's thread count is per calling thread (torch.get_num_threads does not tell which): every
            # thread sets its own, so torch threads x Dask threads never exceed the cores, and every tile sees
            # the same kernels (bit-identical output whatever the worker count)
            torch.set_num_threads(1)
        n, bs = tiles.shape[0], batch_size
        out = np.empty((n, self.bundle.meta.n_outputs) + tiles.shape[2:], np.float32)
        with torch.inference_mode():
            for i in range(0, n, bs):
                batch = tiles[i:i + bs]
                if not self.cuda and len(batch) < bs:
                    batch = np.concatenate([batch, np.zeros((bs - len(batch),) + batch.shape[1:], batch.dtype)])
                out[i:i + bs] = self._forward(batch)[:min(bs, n - i)]
        return out

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=self.amp_dtype):
                logits = self.model(x)
            logits = logits.float()
        else:
            logits = self.model(x)
        k = self.n_classes
        seg = torch.softmax(logits[:, :k], dim=1) if self.softmax else torch.sigmoid(logits[:, :k])
        probs = torch.cat([seg, torch.sigmoid(logits[:, k:])], dim=1) if logits.shape[1] > k else seg
        return probs.cpu().numpy()


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward pass: 1 on CPU (larger batches only add page-fault time there: measured 2x slower at
    4 than at 1 for 512 px tiles), 16 on CUDA, where batching is what fills the GPU."""
    return 16 if device.type == "cuda" else 1


def get_predictor(bundle: str | Path | None, device: str, runtime: str = "torch", tile: int | None = None,
                  precision: str = "fp32") -> Predictor:
    """The worker's predictor for this bundle, device and runtime, loaded on first use and then reused.

    On CPU, parallelism comes from Dask threads/processes and torch runs one intra-op thread in each
    (see :meth:`Predictor.predict`), so results do not depend on the worker count. Other runtimes
    (``--runtime``, :mod:`geoseg.runtime`) keep the same interface and the same thread rule.
    """
    key = (str(bundle), device, runtime, tile, precision)
    with _LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            if runtime == "torch":
                pred = Predictor(load_bundle(bundle), resolve_device(device))
            else:
                from geoseg.runtime import runtime_predictor

                pred = runtime_predictor(bundle, device, runtime, tile, precision)
            _CACHE[key] = pred
    return pred


def forget_predictor(bundle: str | Path | None) -> None:
    """Drop the cached predictors of a bundle path (training validates a new bundle every epoch)."""
    with _LOCK:
        for key in [k for k in _CACHE if k[0] == str(bundle)]:
            del _CACHE[key]


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and cgroups where Python can see them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
