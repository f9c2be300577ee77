"""Small pieces shared by geoseg's own architectures: extra output heads and stride padding."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

HeadSpec = tuple[tuple[str, int], ...]


def parse_heads(heads: int | Sequence[Any] | None, defaults: Sequence[str] = ("boundary", "distance")) -> HeadSpec:
    """Extra output heads as ``((name, channels), ...)``.

    Accepts what JSON can carry in ``arch_args``: a count (``2`` → boundary, distance, then ``extra3``...),
    a list of names (one channel each) or a list of ``[name, channels]`` pairs.
    """
    if heads is None:
        return ()
    if isinstance(heads, int):
        names = list(defaults) + [f"extra{i + 1}" for i in range(len(defaults), heads)]
        return tuple((n, 1) for n in names[:heads])
    out = []
    for item in heads:
        if isinstance(item, str):
            out.append((item, 1))
        else:
            name, channels = item
            out.append((str(name), int(channels)))
    return tuple(out)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of ``x`` to a multiple of the stride; returns the original (h, w).

    geoseg tiles are always stride multiples (no padding then); this only lets a forward at any size work.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)
