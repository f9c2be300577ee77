"""ResUNet-a (d6, d7) after Diakogiannis et al. 2020, "ResUNet-a: a deep learning framework for semantic
segmentation of remotely sensed data". Written here in PyTorch because no library ships it.

Parts, as in the paper: ResBlock-a (a residual block whose branch is the sum of parallel atrous branches), PSP
pooling at the bottleneck and before the heads, and conditioned multitask heads: the distance transform is
predicted first, the boundary from the features and the distance, the segmentation from all three; a colour
reconstruction head runs beside them. The Tanimoto-with-complement loss lives with training (geoseg.train).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.parts import pad_to_multiple

# Atrous rates per encoder level (paper, tables 1 and 2); the decoder mirrors them.
DILATIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "d6": ((1, 3, 15, 31), (1, 3, 15, 31), (1, 3, 15), (1, 3, 15), (1,), (1,)),
    "d7": ((1, 3, 15, 31), (1, 3, 15, 31), (1, 3, 15), (1, 3, 15), (1, 3), (1,), (1,)),
}


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv2DN of the paper: convolution followed by batch normalisation."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout))


class ResBlockA(nn.Module):
    """x + Σ_d [BN → ReLU → 3x3 conv (dilation d) → BN → ReLU → 3x3 conv (dilation d)]."""

    def __init__(self, channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                          nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                          nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False))
            for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for branch in self.branches:
            out = out + branch(x)
        return out


class PSPPooling(nn.Module):
    """Max-pool the features on 1, 2, 4 and 8 bins a side, reduce each to channels/4, upsample, concatenate
    with the input and fuse with a 1x1 Conv2DN (the paper's PSPPooling)."""

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.reduce = nn.ModuleList(conv_bn(channels, max(1, channels // 4)) for _ in self.bins)
        self.fuse = conv_bn(channels + len(self.bins) * max(1, channels // 4), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        parts = [x]
        for b, reduce in zip(self.bins, self.reduce):
            pooled = F.adaptive_max_pool2d(x, min(b, h, w))
            parts.append(F.interpolate(reduce(pooled), size=(h, w), mode="nearest"))
        return self.fuse(torch.cat(parts, dim=1))


class Combine(nn.Module):
    """Join an upsampled decoder tensor with its skip: Conv2DN(1x1) over [ReLU(up), skip]."""

    def __init__(self, up_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(up_channels + skip_channels, out_channels)

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([F.relu(up), skip], dim=1))


def head(cin: int, cout: int, width: int) -> nn.Sequential:
    """Two 3x3 Conv2DN + ReLU, then a 1x1 convolution to the output channels (logits)."""
    return nn.Sequential(conv_bn(cin, width, 3), nn.ReLU(inplace=True), conv_bn(width, width, 3),
                         nn.ReLU(inplace=True), nn.Conv2d(width, cout, 1))


class ResUNetA(nn.Module):
    """ResUNet-a; returns ONE tensor ``(n, classes + boundary + distance + colour, h, w)`` of logits.

    ``width`` is the first level's channel count (32 in the paper; doubled at every level). With
    ``multitask=False`` only the class channels come out. Inputs of any size work (padded to the stride).
    """

    def __init__(self, variant: str = "d6", in_channels: int = 3, classes: int = 2, width: int = 32,
                 multitask: bool = True, boundary_channels: int = 1, distance_channels: int = 1,
                 colour_channels: int | None = None) -> None:
        super().__init__()
        if variant not in DILATIONS:
            raise ValueError(f"unknown ResUNet-a variant {variant!r}; valid: {', '.join(DILATIONS)}")
        levels = DILATIONS[variant]
        chans = [width * 2 ** i for i in range(len(levels))]
        self.stride = 2 ** (len(levels) - 1)
        self.stem = conv_bn(in_channels, chans[0])
        self.down = nn.ModuleList(conv_bn(chans[i - 1], chans[i], 1, stride=2) for i in range(1, len(levels)))
        self.enc = nn.ModuleList(ResBlockA(c, d) for c, d in zip(chans, levels))
        self.bridge = PSPPooling(chans[-1])
        self.up = nn.ModuleList(conv_bn(chans[i], chans[i - 1]) for i in range(len(levels) - 1, 0, -1))
        self.combine = nn.ModuleList(Combine(chans[i - 1], chans[i - 1], chans[i - 1])
                                     for i in range(len(levels) - 1, 0, -1))
        self.dec = nn.ModuleList(ResBlockA(chans[i - 1], levels[i - 1]) for i in range(len(levels) - 1, 0, -1))
        self.last = Combine(chans[0], chans[0], chans[0])  # joins the decoder output with the stem features
        self.psp = PSPPooling(chans[0])
        self.multitask = multitask
        f = chans[0]
        colour_channels = in_channels if colour_channels is None else colour_channels
        self.out_channels = (classes, boundary_channels, distance_channels, colour_channels)
        if multitask:
            self.distance = head(f, distance_channels, f)
            self.distance_in = conv_bn(distance_channels, f)
            self.boundary = head(2 * f, boundary_channels, f)
            self.segmentation = head(f + 2 * f, classes, f)
            self.colour = nn.Conv2d(f, colour_channels, 1)
        else:
            self.segmentation = head(f, classes, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.stride)
        stem = self.stem(x)
        skips, y = [], stem
        for i, block in enumerate(self.enc):
            if i:
                y = self.down[i - 1](y)
            y = block(y)
            skips.append(y)
        y = self.bridge(y)
        for up, combine, block, skip in zip(self.up, self.combine, self.dec, reversed(skips[:-1])):
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = block(combine(up(y), skip))
        y = self.psp(self.last(y, stem))
        if not self.multitask:
            return self.segmentation(y)[..., :h, :w]
        distance = self.distance(y)
        dist_feat = F.relu(self.distance_in(torch.sigmoid(distance)))
        boundary = self.boundary(torch.cat([y, dist_feat], dim=1))
        bound_feat = torch.sigmoid(boundary).mean(dim=1, keepdim=True) * y  # boundary-conditioned features
        segmentation = self.segmentation(torch.cat([y, dist_feat, bound_feat], dim=1))
        colour = self.colour(y)
        return torch.cat([segmentation, boundary, distance, colour], dim=1)[..., :h, :w]

    def extra_heads(self) -> tuple[tuple[str, int], ...]:
        """The extra heads after the class channels, for ``BundleMeta.heads``."""
        if not self.multitask:
            return ()
        _, b, d, c = self.out_channels
        return (("boundary", b), ("distance", d), ("colour", c))


def resunet_a(**kwargs: Any) -> nn.Module:
    """ResUNet-a; ``variant`` is ``d6`` (stride 32) or ``d7`` (stride 64)."""
    return ResUNetA(**kwargs)
