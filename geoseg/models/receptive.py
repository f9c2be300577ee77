"""Measure the halo a model needs for an exact stitch (the halo-exactness invariant), directly: run a tile cut from a
larger image and compare its output with the larger image's output on the same pixels, for every halo.

A single-pixel perturbation underestimates the halo: the stitch error is the sum of the influences of *all* the
context a tile lacks. No library measures this for arbitrary models, so it is written here.

Global context (image pooling in ASPP, squeeze-and-excitation, PSP pooling) makes every output depend on the
whole input: the error then stops falling at some floor whatever the halo. ``errors`` shows the whole curve;
``exact`` is False when even the largest halo leaves more than ``tol``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from geoseg.models.activation import to_probabilities


@dataclass(frozen=True)
class HaloReport:
    """Result of :func:`measure_halo`. ``halo`` is the smallest stride multiple whose error is <= ``tol``
    (the largest one tried when none is)."""

    halo: int
    exact: bool
    tile: int
    tol: float
    errors: dict[int, float] = field(default_factory=dict)  # halo → largest probability difference in the core

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = {str(k): float(f"{v:.3g}") for k, v in self.errors.items()}
        return out


def _outputs(out: torch.Tensor, n_classes: int | None, softmax: bool) -> torch.Tensor:
    """Probabilities as inference computes them (:mod:`geoseg.models.activation`), or raw outputs without
    ``n_classes``."""
    return out if n_classes is None else to_probabilities(out, n_classes, softmax)


def measure_halo(model: torch.nn.Module, bands: int, tile: int = 256, tol: float = 1e-3, *, stride: int = 32,
                 n_classes: int | None = None, softmax: bool = True, seed: int = 0) -> HaloReport:
    """Halo for ``tile``-px tiles: the output of a tile cut from the middle of a ``2*tile`` image, against that
    image's output, compared in the tile's core for halo 0, stride, 2*stride... (< tile/2).

    With ``n_classes`` the comparison is on probabilities (what the stitch invariant is stated in), else on raw
    outputs. Costs one forward at ``2*tile`` and one at ``tile``; the input is normal noise.
    """
    if tile % stride:
        raise ValueError(f"tile {tile} is not a multiple of the stride {stride}")
    gen = torch.Generator().manual_seed(seed)
    off = tile // 2 // stride * stride
    x = torch.randn(1, bands, tile + 2 * off, tile + 2 * off, generator=gen)
    model = model.eval()
    with torch.inference_mode():
        whole = _outputs(model(x), n_classes, softmax)[..., off:off + tile, off:off + tile]
        part = _outputs(model(x[..., off:off + tile, off:off + tile]), n_classes, softmax)
    diff = (whole - part).abs().amax(dim=(0, 1))
    errors = {h: float(diff[h:tile - h, h:tile - h].max()) for h in range(0, (tile + 1) // 2, stride)}
    good = [h for h, err in errors.items() if err <= tol]
    return HaloReport(min(good) if good else max(errors), bool(good), tile, tol, errors)
