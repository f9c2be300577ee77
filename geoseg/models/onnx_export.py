"""``geoseg models export --onnx``: a bundle → an ONNX model the QGIS Deepness plugin opens with its settings.

Deepness reads ``metadata_props`` (JSON-encoded values): ``model_type``, ``class_names`` ({id: name}),
``resolution`` (cm per pixel), ``tiles_size``/``tile_size``, ``tiles_overlap`` (percent), ``seg_thresh`` and
``standardization_mean``/``standardization_std`` (applied after scaling uint8 to 0..1). The graph outputs class
probabilities (softmax/sigmoid applied, as in ``geoseg infer``), and, when the bundle has extra heads, a second
output with their sigmoid.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from geoseg.errors import BundleError
from geoseg.models.activation import class_probabilities, head_probabilities
from geoseg.models.bundle import Bundle
from geoseg.tempfiles import atomic_path


class Probabilities(torch.nn.Module):
    """The bundle's model with geoseg's output activations, split into classes and extra heads."""

    def __init__(self, bundle: Bundle) -> None:
        super().__init__()
        self.model = bundle.model.eval()
        self.k = len(bundle.meta.classes)
        self.softmax = bundle.meta.activation == "softmax"
        self.has_heads = bundle.meta.n_outputs > self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        seg = class_probabilities(out, self.k, self.softmax)
        return (seg, head_probabilities(out, self.k)) if self.has_heads else seg


def deepness_metadata(bundle: Bundle, tile: int | None = None) -> dict[str, str]:
    """The metadata_props Deepness reads, plus the full geoseg metadata under ``geoseg``."""
    meta = bundle.meta
    tile = tile or meta.tile
    props = {
        "model_type": "Segmentor",
        "class_names": {i: c.name for i, c in enumerate(meta.classes)},
        "resolution": meta.gsd * 100.0,
        "tiles_size": tile,
        "tile_size": tile,
        "tiles_overlap": round(100 * 2 * meta.halo / tile),
        "seg_thresh": 0.5,
        "standardization_mean": list(meta.mean),
        "standardization_std": list(meta.std),
    }
    out = {k: json.dumps(v) for k, v in props.items()}
    out["geoseg"] = meta.to_json()
    return out


def export_onnx(bundle: Bundle, out: str | Path, *, opset: int = 18, tile: int | None = None,
                extra_props: dict[str, str] | None = None) -> Path:
    """Export at ``tile`` (default: the bundle's tile size) with a dynamic batch, attach Deepness metadata (and
    ``extra_props``), write atomically. :mod:`geoseg.graph_cache` uses it for the ``--runtime`` graphs."""
    try:
        import onnx
    except ImportError:
        raise BundleError("ONNX export needs the onnx extra: pip install 'geoseg[onnx]'") from None
    out = Path(out)
    meta = bundle.meta
    tile = tile or meta.tile
    x = torch.zeros(2, meta.n_bands, tile, tile)
    names = ["classes", "heads"] if meta.n_outputs > len(meta.classes) else ["classes"]
    module = Probabilities(bundle).eval()
    batch = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    try:
        try:  # a dynamic batch dimension first (Deepness batches tiles), a fixed batch of 1 if that fails
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset, input_names=["image"],
                                        output_names=names, dynamic_shapes=batch, verbose=False)
        except Exception:  # noqa: BLE001 - retried below with static shapes; that error is the one reported
            program = torch.onnx.export(module, (x[:1],), dynamo=True, opset_version=opset, input_names=["image"],
                                        output_names=names, verbose=False)
    except Exception as err:  # torch.export raises many types; report them as one line
        raise BundleError(f"{bundle.path}: ONNX export of {meta.arch} failed: {str(err).splitlines()[0]}") from None
    assert program is not None  # dynamo export returns its program
    model = program.model_proto
    for key, value in {**deepness_metadata(bundle, tile), **(extra_props or {})}.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out
