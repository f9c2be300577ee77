"""Batched model inference on a device; one model per device per worker process, shared by its threads.

The feed (:meth:`Predictor.feed`) is what a block task uses: raw tiles in the scene's dtype go to the device, are
normalised there, run through the model, and come back as their cores only: the class bytes (argmax on the
device), plus the probabilities and extra heads when the caller needs them. On CUDA the raw tiles are staged in
pinned host buffers and uploaded on a copy stream, so one batch's upload and the previous batch's download overlap
the compute between them. :meth:`Predictor.predict` (normalised tiles in, whole-tile probabilities out) serves
training's validation, evaluation and exports.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from geoseg.models.bundle import Bundle, load_bundle
from geoseg.tta import averaged

_CACHE: dict[tuple[str, str, str, int | None, str], "Predictor"] = {}
_LOCK = threading.Lock()

# One batch of raw tiles ``(bands, t, t)`` in the scene dtype and their validity masks ``(t, t)`` (None: all valid).
TileBatch = tuple[Sequence[np.ndarray], Sequence[np.ndarray] | None]


@dataclass
class CoreBatch:
    """The cores of one batch of tiles. On CUDA the arrays are views of reused pinned buffers: they stay valid
    until the next batch is asked for, so copy them out (into the block) before that."""

    classes: np.ndarray            # uint8 (n, core, core)
    probs: np.ndarray | None       # float32 (n, outputs, core, core): class channels, then heads; when asked for


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when there is one (on a machine with several GPUs, local Dask worker ``i`` takes GPU
    ``i`` modulo their count); ``cuda:N`` and ``cpu`` are taken as given."""
    from geoseg.errors import ConfigError

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", _worker_ordinal() % torch.cuda.device_count())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device; use auto, cpu or cuda[:N]") from None
    return torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None else dev


def _worker_ordinal() -> int:
    """The local Dask worker's number (LocalCluster names its workers 0, 1, ...), 0 outside a worker."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    return name if isinstance(name, int) else 0


def norm_terms(scale: float, mean: Sequence[float],
               std: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-band float32 gain, offset and upper bound of ``(clip(x / scale, 0, 1) - mean) / std``, folded exactly
    as :func:`geoseg.scene.normalise` folds them (the lower bound is the offset), so the device gives the same
    bits on CPU."""
    std64, mean64 = np.asarray(std, np.float64), np.asarray(mean, np.float64)
    gain = (1.0 / (scale * std64)).astype(np.float32)
    offset = (-mean64 / std64).astype(np.float32)
    return gain, offset, ((1.0 - mean64) / std64).astype(np.float32)


def normalise_tiles(raw: torch.Tensor, valid: torch.Tensor | None, gain: torch.Tensor, offset: torch.Tensor,
                    upper: torch.Tensor) -> torch.Tensor:
    """Raw tiles ``(n, bands, t, t)`` of any dtype to float32 model input on their own device, clipped to the
    standardised image of 0..1; invalid pixels become 0 after normalising. A multiply then an add (two roundings,
    as numpy does), never a fused one."""
    x = raw.to(torch.float32) * gain.view(1, -1, 1, 1)  # out of place: float32 input must not be changed
    x.add_(offset.view(1, -1, 1, 1))
    torch.clamp(x, offset.view(1, -1, 1, 1), upper.view(1, -1, 1, 1), out=x)
    if valid is not None:
        x.masked_fill_(~valid[:, None], 0.0)
    return x


def class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """Argmax over dim 1 as uint8, ties to the lower class (as ``np.argmax`` and :func:`geoseg.stitch.class_raster`),
    by a running maximum: ``torch.argmax`` over a short class axis is several times slower on CPU."""
    best = probs[:, 0].clone()
    classes = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for k in range(1, probs.shape[1]):
        classes.masked_fill_(probs[:, k] > best, k)
        torch.maximum(best, probs[:, k], out=best)
    return classes


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype numpy's ``dtype`` maps to (uint16 included)."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


class _CudaStage:
    """One thread's CUDA staging: a copy stream and a compute stream, and two slots of pinned host buffers (one
    batch is filled and uploaded while the other is computed and downloaded)."""

    def __init__(self, device: torch.device) -> None:
        self.copy = torch.cuda.Stream(device)
        self.compute = torch.cuda.Stream(device)
        self.uploaded = [torch.cuda.Event(), torch.cuda.Event()]
        self.done = [torch.cuda.Event(), torch.cuda.Event()]
        self.buffers: dict[tuple[str, int], torch.Tensor] = {}

    def buffer(self, name: str, slot: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get((name, slot))
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
            buf = self.buffers[(name, slot)] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return buf


def pipelined(batches: Iterable[TileBatch], launch: Callable[[int, TileBatch], int],
              collect: Callable[[int, int], CoreBatch]) -> Iterator[CoreBatch]:
    """Launch batch ``i + 1`` (into slot ``(i + 1) % 2``) before collecting batch ``i``: on CUDA, launching only
    enqueues, so the host stages the next batch while the device computes this one."""
    pending: tuple[int, int] | None = None
    for i, batch in enumerate(batches):
        n = launch(i % 2, batch)
        if pending is not None:
            yield collect(*pending)
        pending = (i % 2, n)
    if pending is not None:
        yield collect(*pending)


@dataclass
class Predictor:
    """A bundle's model placed on a device, run in eval + inference mode in fixed-size batches. Thread-safe: the
    model is shared, each thread has its own CUDA streams and pinned buffers."""

    bundle: Bundle
    device: torch.device
    _terms: dict[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict, init=False,
                                                                                 repr=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

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
        self._cpu_threads()
        n, bs = tiles.shape[0], batch_size
        out = np.empty((n, self.bundle.meta.n_outputs) + tiles.shape[2:], np.float32)
        with torch.inference_mode():
            for i in range(0, n, bs):
                x = torch.from_numpy(np.ascontiguousarray(tiles[i:i + bs])).to(self.device, non_blocking=True)
                out[i:i + bs] = self._probs(self._pad(x, bs))[:min(bs, n - i)].cpu().numpy()
        return out

    def feed(self, batches: Iterable[TileBatch], *, scale: float, halo: int, batch_size: int,
             want_probs: bool, tta: int = 1) -> Iterator[CoreBatch]:
        """Each batch's cores, in order: raw tiles are normalised with ``scale`` and the bundle's mean and std on
        the device, then cropped by ``halo`` there; probabilities come back only with ``want_probs``. ``tta``
        (4 or 8): whole tiles averaged over that many flipped/turned views before the crop (:mod:`geoseg.tta`).

        On CPU the values are those of :meth:`predict` on :func:`geoseg.scene.normalise`'d tiles, bit for bit."""
        self._cpu_threads()
        if self.cuda:
            stage = getattr(self._local, "stage", None)
            if stage is None:
                stage = self._local.stage = _CudaStage(self.device)
            return pipelined(batches, lambda slot, b: self._launch_cuda(stage, slot, b, scale, halo, batch_size,
                                                                        want_probs, tta),
                             lambda slot, n: self._collect_cuda(stage, slot, n, want_probs))
        done: dict[int, CoreBatch] = {}

        def launch(slot: int, batch: TileBatch) -> int:
            done[slot] = self._run_cpu(batch, scale, halo, batch_size, want_probs, tta)
            return len(batch[0])

        return pipelined(batches, launch, lambda slot, n: done.pop(slot))

    def _run_cpu(self, batch: TileBatch, scale: float, halo: int, batch_size: int, want_probs: bool,
                 tta: int = 1) -> CoreBatch:
        tiles, masks = batch
        n = len(tiles)
        with torch.inference_mode():
            valid = None if masks is None else torch.from_numpy(np.stack(masks))
            x = normalise_tiles(torch.from_numpy(np.stack(tiles)), valid, *self._norm(scale))
            probs = averaged(self._probs, self._pad(x, batch_size), tta)[:n]
            t = probs.shape[-1]
            cores = probs[:, :, halo:t - halo, halo:t - halo]
            classes = class_argmax(cores[:, :self.n_classes])
        return CoreBatch(classes.numpy(), cores.numpy() if want_probs else None)

    def _launch_cuda(self, stage: _CudaStage, slot: int, batch: TileBatch, scale: float, halo: int,
                     batch_size: int, want_probs: bool, tta: int = 1) -> int:
        """Stage the batch in this slot's pinned buffers, upload it on the copy stream, and enqueue normalise,
        forward, argmax, crop and the cores' download on the compute stream; returns without waiting."""
        tiles, masks = batch
        n, t = len(tiles), tiles[0].shape[-1]
        core = t - 2 * halo
        stage.uploaded[slot].synchronize()  # this slot's last upload has left its pinned buffers
        raw = stage.buffer("raw", slot, (batch_size,) + tuple(tiles[0].shape), torch_dtype(tiles[0].dtype))
        np.stack(tiles, out=raw.numpy()[:n])
        valid = None
        if masks is not None:
            valid = stage.buffer("valid", slot, (batch_size, t, t), torch.bool)
            np.stack(masks, out=valid.numpy()[:n])
        with torch.cuda.stream(stage.copy):
            x = raw[:n].to(self.device, non_blocking=True)
            v = None if valid is None else valid[:n].to(self.device, non_blocking=True)
            stage.uploaded[slot].record(stage.copy)
        stage.compute.wait_event(stage.uploaded[slot])
        with torch.cuda.stream(stage.compute), torch.inference_mode():
            for tensor in (x, v):  # made on the copy stream, used on this one: keep the allocator from reusing it
                if tensor is not None:
                    tensor.record_stream(stage.compute)
            probs = averaged(self._probs, normalise_tiles(x, v, *self._norm(scale)), tta)
            cores = probs[:, :, halo:halo + core, halo:halo + core]
            classes = stage.buffer("classes", slot, (batch_size, core, core), torch.uint8)
            classes[:n].copy_(class_argmax(cores[:, :self.n_classes]), non_blocking=True)
            if want_probs:
                out = stage.buffer("probs", slot, (batch_size, probs.shape[1], core, core), torch.float32)
                out[:n].copy_(cores, non_blocking=True)
            stage.done[slot].record(stage.compute)
        return n

    def _collect_cuda(self, stage: _CudaStage, slot: int, n: int, want_probs: bool) -> CoreBatch:
        stage.done[slot].synchronize()
        probs = stage.buffers[("probs", slot)][:n].numpy() if want_probs else None
        return CoreBatch(stage.buffers[("classes", slot)][:n].numpy(), probs)

    def _cpu_threads(self) -> None:
        if not self.cuda:
            # OpenMP's thread count is per calling thread (torch.get_num_threads does not tell which): every
            # thread sets its own, so torch threads x Dask threads never exceed the cores, and every tile sees
            # the same kernels (bit-identical output whatever the worker count)
            torch.set_num_threads(1)

    def _pad(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """On CPU, a short last batch padded with zeros to the full batch size (see :meth:`predict`)."""
        if self.cuda or len(x) >= batch_size:
            return x
        return torch.cat([x, x.new_zeros((batch_size - len(x),) + tuple(x.shape[1:]))])

    def _norm(self, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bundle's gain, offset and upper bound for ``scale`` as tensors on the device, made once per scale."""
        terms = self._terms.get(scale)
        if terms is None:
            meta = self.bundle.meta
            gain, offset, upper = (torch.from_numpy(a).to(self.device) for a in norm_terms(scale, meta.mean,
                                                                                            meta.std))
            terms = self._terms[scale] = (gain, offset, upper)
        return terms

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        """Model input on the device to float32 probabilities: class activation, then a sigmoid per extra head."""
        if self.cuda:
            with torch.autocast("cuda", dtype=self.amp_dtype):
                logits = self.model(x.contiguous(memory_format=torch.channels_last))
            logits = logits.float()
        else:
            logits = self.model(x)
        k = self.n_classes
        seg = torch.softmax(logits[:, :k], dim=1) if self.softmax else torch.sigmoid(logits[:, :k])
        return torch.cat([seg, torch.sigmoid(logits[:, k:])], dim=1) if logits.shape[1] > k else seg


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward pass: 1 on CPU (larger batches only add page-fault time there: measured 2x slower at
    4 than at 1 for 512 px tiles), 16 on CUDA, where batching is what fills the GPU."""
    return 16 if device.type == "cuda" else 1


def get_predictor(bundle: str | Path | None, device: str, runtime: str = "torch", tile: int | None = None,
                  precision: str = "fp32") -> Predictor:
    """The worker's predictor for this bundle, device and runtime, loaded on first use and then shared by every
    thread.

    Keyed by the resolved device, so ``auto``, ``cuda`` and ``cuda:0`` share one model on one GPU. On CPU,
    parallelism comes from Dask threads/processes and torch runs one intra-op thread in each (see
    :meth:`Predictor.predict`), so results do not depend on the worker count. Other runtimes (``--runtime``,
    :mod:`geoseg.runtime`) keep the same interface and the same thread rule.
    """
    dev = resolve_device(device)
    key = (str(bundle), str(dev), runtime, tile, precision)
    with _LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            if runtime == "torch":
                pred = Predictor(load_bundle(bundle), dev)
            else:
                from geoseg.runtime import runtime_predictor

                pred = runtime_predictor(bundle, str(dev), runtime, tile, precision)
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
