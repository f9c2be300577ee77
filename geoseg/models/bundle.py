"""Bundles: one ``.safetensors`` file holding weights plus JSON metadata in its header.

Loading never unpickles anything (the no-code-from-data invariant): safetensors stores raw tensors, the metadata
is JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import __version__
from geoseg.errors import BundleError
from geoseg.tempfiles import atomic_path

if TYPE_CHECKING:  # torch is imported only to load or save weights: reading metadata (and every user error that
    import torch   # it finds) must answer before torch's seconds of import

META_KEY = "geoseg"
GSD_TOLERANCE = 0.25  # a scene pixel size further than this (relative) from the bundle's GSD gets a warning
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
DEFAULT_BUNDLE = "default"


@dataclass(frozen=True)
class ClassInfo:
    """One output class: index 0 is background and is never vectorised."""

    name: str
    layer: str = ""
    colour: str = "#000000"


@dataclass(frozen=True)
class BundleMeta:
    """Everything needed to run a model on a scene, stored next to its weights."""

    arch: str
    arch_args: dict[str, Any]
    classes: tuple[ClassInfo, ...]
    band_names: tuple[str, ...] = ("red", "green", "blue")
    band_indexes: tuple[int, ...] = (1, 2, 3)
    # Value that maps to 1.0 per input dtype kind before mean/std; keys: "uint8", "uint16", "float".
    input_range: dict[str, float] = field(default_factory=lambda: {"uint8": 255.0, "uint16": 65535.0, "float": 1.0})
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    gsd: float = 0.5
    tile: int = 512
    halo: int = 64
    stride: int = 32
    activation: str = "softmax"
    # Extra output heads after the class channels, in channel order: ((name, channels), ...), e.g.
    # (("boundary", 1), ("distance", 1)). Every model returns ONE tensor (n, len(classes) + extra, h, w); the
    # class channels get ``activation``, extra heads a sigmoid.
    heads: tuple[tuple[str, int], ...] = ()
    # Free-form JSON about where the weights come from; geoseg writes e.g. "data" (fingerprint of the training
    # data), "recipe" (pipeline), "metrics", "imported_from", "halo_measured" (geoseg.models.receptive).
    provenance: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    @property
    def n_bands(self) -> int:
        return len(self.band_indexes)

    @property
    def n_outputs(self) -> int:
        """Channels the model returns: the classes, then every extra head."""
        return len(self.classes) + sum(c for _, c in self.heads)

    def head_slices(self) -> dict[str, slice]:
        """Channel range of each extra head in the model output."""
        out, start = {}, len(self.classes)
        for name, channels in self.heads:
            out[name] = slice(start, start + channels)
            start += channels
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BundleMeta":
        raw = json.loads(text)
        raw["classes"] = tuple(ClassInfo(**c) for c in raw["classes"])
        for key in ("band_names", "band_indexes", "mean", "std"):
            raw[key] = tuple(raw[key])
        raw["heads"] = tuple((str(n), int(c)) for n, c in raw.get("heads", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})

    def scale_for(self, dtype: np.dtype) -> float:
        """The divisor that brings pixel values of ``dtype`` to the model's 0..1 range."""
        kind = "float" if np.dtype(dtype).kind == "f" else np.dtype(dtype).name
        if kind not in self.input_range:
            raise BundleError(f"bundle has no input range for {np.dtype(dtype).name} imagery; "
                              f"it accepts {', '.join(self.input_range)}")
        return float(self.input_range[kind])


def gsd_mismatch(scene_gsd: float, meta: BundleMeta, scene_name: str) -> str | None:
    """A one-line warning when the scene's pixel size (metres) is more than 25% off the model's GSD, else None."""
    if meta.gsd <= 0 or scene_gsd <= 0 or abs(scene_gsd / meta.gsd - 1) <= GSD_TOLERANCE:
        return None
    return (f"{scene_name}: pixel size {scene_gsd:.3g} m is {scene_gsd / meta.gsd:.2f}x the model's GSD "
            f"({meta.gsd:g} m); results may be poor: pass --resample to read it at the model's GSD, resample the "
            f"scene (gdalwarp -tr {meta.gsd:g} {meta.gsd:g}) or use a model trained at this resolution")


@dataclass
class Bundle:
    """A loaded model in eval mode plus its metadata."""

    meta: BundleMeta
    model: "torch.nn.Module"
    path: Path | None = None


def resolve_bundle(name_or_path: str | Path | None) -> Path:
    """Map a registered name (``default``) or a path to a bundle file."""
    name = str(name_or_path or DEFAULT_BUNDLE)
    path = Path(name)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BundleError(f"{path}: pickle checkpoints are refused (they can run code); "
                          f"convert it with 'geoseg models import {path}'")
    if path.exists():
        return path
    registered = BUNDLED_DIR / f"{name}.safetensors"
    if path.suffix != ".safetensors" and registered.exists():
        return registered
    names = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.safetensors"))) or "none"
    if path.suffix == ".safetensors":
        raise BundleError(f"{path}: bundle not found; check the path, or give a registered model ({names})")
    raise BundleError(f"{name}: no such bundle file or registered model; give a .safetensors path or one of: {names}")


def read_meta(name_or_path: str | Path | None = None) -> BundleMeta:
    """Only the metadata of a bundle (reads the JSON header, not the weights)."""
    from safetensors import safe_open

    path = resolve_bundle(name_or_path)
    try:
        with safe_open(str(path), framework="numpy") as handle:  # "pt" would import torch
            header = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own SafetensorError/OSError types
        raise BundleError(f"{path}: not a readable safetensors bundle ({err})") from None
    if META_KEY not in header:
        raise BundleError(f"{path}: safetensors file has no geoseg metadata; save it with geoseg")
    try:
        return BundleMeta.from_json(header[META_KEY])
    except (ValueError, TypeError, KeyError) as err:
        raise BundleError(f"{path}: invalid geoseg metadata ({err})") from None


def load_bundle(name_or_path: str | Path | None = None) -> Bundle:
    """Load a bundle without unpickling: tensors via safetensors, metadata via JSON."""
    from safetensors.torch import load_file

    from geoseg.models.registry import build_model

    path = resolve_bundle(name_or_path)
    meta = read_meta(path)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError/OSError types
        raise BundleError(f"{path}: not a readable safetensors bundle ({err})") from None
    model = build_model(meta.arch, **meta.arch_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).splitlines()[0]
        raise BundleError(f"{path}: weights do not match architecture {meta.arch}: {reason}") from None
    model.eval()
    return Bundle(meta=meta, model=model, path=path)


def save_bundle(path: str | Path, model: "torch.nn.Module", meta: BundleMeta, *, half: bool = False) -> Path:
    """Write weights + metadata atomically (temp name in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:  # halves the shipped size; floats are restored to fp32 on load by load_state_dict
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: meta.to_json()})
    return path
