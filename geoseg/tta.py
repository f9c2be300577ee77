"""Test-time augmentation: a tile's probabilities averaged over flips and quarter turns of its input.

Each view of a tile is transformed whole, run, and turned back before the caller crops its core, so every output
pixel still depends only on its own tile's fixed input (halo-exact, partition invariant). Tiles are square, so
quarter turns keep their shape. The average is taken in probability space (after softmax/sigmoid).
"""

from __future__ import annotations

from typing import Callable

import torch

# views per choice, as (quarter turns, mirrored first): 4 is the flip group (identity, left-right, up-down and
# both, which is the half turn), 8 adds the transposes (the full dihedral group of the square)
VIEWS: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    4: ((0, False), (0, True), (2, True), (2, False)),
    8: ((0, False), (1, False), (2, False), (3, False), (0, True), (1, True), (2, True), (3, True)),
}
CHOICES = tuple(VIEWS)


def _view(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    if mirror:
        x = torch.flip(x, (-1,))
    return torch.rot90(x, turns, (-2, -1)) if turns else x


def _unview(p: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    if turns:
        p = torch.rot90(p, -turns, (-2, -1))
    return torch.flip(p, (-1,)) if mirror else p


def averaged(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: int) -> torch.Tensor:
    """``probs`` of input tiles ``x`` ``(n, bands, t, t)``, averaged over ``views`` (1, 4 or 8) dihedral views.

    Every view is made contiguous before the model sees it, so each runs the kernels a plain tile runs; the
    views are summed in a fixed order, so a tile gives the same bits wherever it falls."""
    if views not in VIEWS:
        from geoseg.errors import ConfigError

        raise ConfigError(f"tta {views}: not a number of views; use one of {', '.join(map(str, CHOICES))}")
    if views == 1:
        return probs(x)
    total: torch.Tensor | None = None
    for turns, mirror in VIEWS[views]:
        p = _unview(probs(_view(x, turns, mirror).contiguous()), turns, mirror)
        total = p.clone() if total is None else total.add_(p)
    assert total is not None
    return total.mul_(1.0 / views)
