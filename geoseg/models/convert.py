"""``geoseg models import``: a state dict saved by ``torch.save`` → a safetensors bundle.

The checkpoint is read with ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors and plain
containers only); a file that needs anything else is refused, never loaded the unsafe way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import BundleError
from geoseg.models.bundle import BundleMeta, ClassInfo, save_bundle
from geoseg.models.cost import model_heads, model_stride
from geoseg.models.receptive import measure_halo
from geoseg.models.registry import build_model

STATE_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def _unpickle_reason(err: Exception) -> str:
    """What torch's restricted unpickler refused (e.g. "unsupported GLOBAL posix.system"), never the advice its
    message opens with (to load with weights_only=False: that runs the file's code)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    text = useful[0] if useful else type(err).__name__
    return text.replace("Trying to load ", "").rstrip(".")[:200]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``torch.save`` checkpoint: a plain state dict, or one under a usual key (``state_dict``...)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: checkpoint not found; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for forbidden globals, RuntimeError/EOFError for broken files
        raise BundleError(f"{path}: refused: not a plain-tensor checkpoint that loads with weights_only=True "
                          f"({_unpickle_reason(err)}); re-save it as model.state_dict() from the code that built "
                          "it") from None
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BundleError(f"{path}: no state dict found (expected a dict of tensors, or one under "
                          f"{', '.join(STATE_KEYS)}); save model.state_dict()")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel/DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def parse_classes(text: str) -> tuple[ClassInfo, ...]:
    """``background,building:#e31a1c,road`` → classes (index 0 is the background); colour optional."""
    out: list[ClassInfo] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, colour = item.partition(":")
        out.append(ClassInfo(name, f"{name}s" if out else "", colour or "#000000"))
    if len(out) < 2:
        raise BundleError(f"--classes {text!r}: give at least two comma-separated classes, background first")
    return tuple(out)


def import_checkpoint(checkpoint: str | Path, out: str | Path, arch: str, arch_args: dict[str, Any],
                      classes: tuple[ClassInfo, ...], *, heads: tuple[tuple[str, int], ...] | None = None,
                      tile: int = 512, halo: int | None = None, gsd: float = 0.5,
                      mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                      provenance: dict[str, Any] | None = None) -> tuple[Path, BundleMeta]:
    """Build ``arch``, load the checkpoint's weights strictly, check the outputs, write the bundle.

    ``halo=None`` measures it (:func:`geoseg.models.receptive.measure_halo` at the tile size).
    """
    state = read_state_dict(checkpoint)
    model = build_model(arch, **arch_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise BundleError(f"{checkpoint}: weights do not match {arch} with {arch_args}: {reason}; "
                          "check --arch and --arch-args") from None
    model.eval()
    bands = int(arch_args.get("in_channels", 3))
    heads = model_heads(model) if heads is None else heads
    stride = model_stride(model)
    meta = BundleMeta(arch=arch, arch_args=arch_args, classes=classes, heads=heads,
                      band_names=tuple(f"b{i}" for i in range(1, bands + 1)),
                      band_indexes=tuple(range(1, bands + 1)), mean=mean or (0.5,) * bands,
                      std=std or (0.25,) * bands, gsd=gsd, tile=tile, halo=halo or 0, stride=stride,
                      provenance={"imported_from": Path(checkpoint).name, **(provenance or {})})
    if len(meta.mean) != bands or len(meta.std) != bands:
        raise BundleError(f"--mean/--std need {bands} values (one per band), got {len(meta.mean)}/{len(meta.std)}")
    with torch.inference_mode():
        got = model(torch.zeros(1, bands, 2 * stride, 2 * stride)).shape[1]
    if got != meta.n_outputs:
        raise BundleError(f"{checkpoint}: model returns {got} channels but {len(classes)} classes + heads "
                          f"{list(heads)} make {meta.n_outputs}; fix --classes or --heads")
    if halo is None:
        report = measure_halo(model, bands, tile, stride=stride, n_classes=len(classes))
        meta = BundleMeta(**{**meta.__dict__, "halo": report.halo,
                             "provenance": {**meta.provenance, "halo_measured": report.to_dict()}})
        if not report.exact:
            logging.getLogger("geoseg").warning(
                f"{checkpoint}: no halo under tile/2 keeps the stitch within {report.tol:g} (error "
                f"{report.errors[report.halo]:.2g} at halo {report.halo}); the bundle uses {report.halo}: give a "
                "larger --tile, or --halo to choose")
    return save_bundle(out, model, meta), meta
