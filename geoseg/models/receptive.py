"""Measure how far a change in the input reaches in the output: the halo a model needs for an exact stitch.

Perturb single input pixels and find the largest (Chebyshev) distance at which any output probability moves by
more than ``tol``. No library does this for arbitrary models, so it is written here.

Global context (image pooling in ASPP, squeeze-and-excitation, PSP pooling) makes every output depend on every
input in principle; through an average over the whole tile a one-pixel change is diluted by the tile area, so it
stays far below ``tol`` and the measured halo is the convolutional reach. ``tail_change`` reports what is left.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class HaloReport:
    """Result of :func:`measure_halo`; ``halo`` is rounded up to the stride (what ``TileSpec`` accepts)."""

    reach: int            # largest distance (px) where the output changed by more than tol
    halo: int             # reach rounded up to a multiple of the stride
    tile: int
    tol: float
    reached_edge: bool    # the change reached the tile edge: reach is only a lower bound, try a larger tile
    tail_change: float    # largest change beyond the reach (<= tol; > 0 shows global pooling's reach)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_probabilities(out: torch.Tensor, n_classes: int | None, softmax: bool = True) -> torch.Tensor:
    """As :class:`geoseg.predict.Predictor`: softmax (or sigmoid) on the class channels, sigmoid on the heads."""
    if n_classes is None:
        return out
    seg = torch.softmax(out[:, :n_classes], 1) if softmax else torch.sigmoid(out[:, :n_classes])
    return torch.cat([seg, torch.sigmoid(out[:, n_classes:])], 1)


def measure_halo(model: torch.nn.Module, bands: int, tile: int = 256, tol: float = 1e-3, *, stride: int = 32,
                 n_classes: int | None = None, softmax: bool = True, seed: int = 0) -> HaloReport:
    """Perturb two pixels near the tile centre (one on, one off the stride grid) and measure the output's reach.

    With ``n_classes`` the comparison is on probabilities (what the stitch invariant is stated in), else on raw
    outputs. ``tile`` should be well over twice the expected reach; ``reached_edge`` says when it was not.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, bands, tile, tile, generator=gen)
    c = tile // 2
    points = [(c, c), (c + stride // 2 + 1, c - stride // 2 - 1)]
    batch = x.repeat(len(points) + 1, 1, 1, 1)
    for i, (r, col) in enumerate(points, start=1):
        batch[i, :, r, col] += 4.0  # four standard deviations of normalised input
    with torch.inference_mode():
        out = to_probabilities(model.eval()(batch), n_classes, softmax)
    rows = torch.arange(tile).view(-1, 1)
    cols = torch.arange(tile).view(1, -1)
    diffs, dists = [], []
    reach, edge = 0, False
    for i, (r, col) in enumerate(points, start=1):
        diff = (out[i] - out[0]).abs().amax(dim=0)
        dist = torch.maximum((rows - r).abs(), (cols - col).abs())
        changed = diff > tol
        if changed.any():
            reach = max(reach, int(dist[changed].max()))
        edge = edge or bool(changed[0].any() or changed[-1].any() or changed[:, 0].any() or changed[:, -1].any())
        diffs.append(diff)
        dists.append(dist)
    beyond = [d[dist > reach] for d, dist in zip(diffs, dists)]
    tail = max((float(b.max()) for b in beyond if b.numel()), default=0.0)
    halo = max(stride, math.ceil(reach / stride) * stride)
    return HaloReport(reach, halo, tile, tol, edge, tail)
