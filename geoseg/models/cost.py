"""What a model costs: parameters, FLOPs per tile (torch's own FlopCounterMode), output stride, output heads."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


def gflop_per_tile(model: torch.nn.Module, bands: int, tile: int) -> float:
    """GFLOP (1 multiply-add = 2 FLOP, torch's convention) of one forward pass on a ``tile``² tile."""
    x = torch.zeros(1, bands, tile, tile)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(x)
    return counter.get_total_flops() / 1e9


def model_stride(model: torch.nn.Module) -> int:
    """The factor input sides must be a multiple of: geoseg's own models say it, smp's encoders too."""
    stride = getattr(model, "stride", None)
    if isinstance(stride, int):
        return stride
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", 1) or 1)


def model_heads(model: torch.nn.Module) -> tuple[tuple[str, int], ...]:
    """Extra heads a geoseg architecture declares (smp models declare none: give them with ``--heads``)."""
    fn = getattr(model, "extra_heads", None)
    return tuple(fn()) if callable(fn) else ()
