"""Architectures by name, built from segmentation-models-pytorch parts.

The spine needs any smp architecture by name (``smp:Unet`` etc.); richer architectures register here too.
"""

from __future__ import annotations

from typing import Any, Callable

import segmentation_models_pytorch as smp  # imported once here: seconds of import never land in a run
import torch

from geoseg.errors import BundleError

Builder = Callable[..., torch.nn.Module]
_REGISTRY: dict[str, Builder] = {}

SMP_ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
    "UPerNet", "Segformer",
)


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding an architecture builder to the registry."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_architectures() -> list[str]:
    """Every name ``build_model`` accepts."""
    return sorted(_REGISTRY) + [f"smp:{a}" for a in SMP_ARCHITECTURES]


def build_model(arch: str, **kwargs: Any) -> torch.nn.Module:
    """Build an untrained model; nothing is ever downloaded (``encoder_weights=None``)."""
    if arch.startswith("smp:"):
        name = arch[4:]
        if name not in SMP_ARCHITECTURES:
            raise BundleError(f"unknown architecture {arch!r}; valid: {', '.join(list_architectures())}")
        kwargs = {**kwargs, "encoder_weights": None}
        builder: Builder = getattr(smp, name)
    elif arch in _REGISTRY:
        builder = _REGISTRY[arch]
    else:
        raise BundleError(f"unknown architecture {arch!r}; valid: {', '.join(list_architectures())}")
    try:
        return builder(**kwargs)
    except TypeError as err:  # an argument the builder does not take
        raise BundleError(f"architecture {arch}: {err}; check its arguments (--arch-args)") from None


@register("pixel-linear")
def pixel_linear(in_channels: int = 3, classes: int = 3) -> torch.nn.Module:
    """Per-pixel linear classifier (a 1x1 convolution): a spectral baseline, and exact georeferencing tests."""
    return torch.nn.Conv2d(in_channels, classes, kernel_size=1)


# geoseg's own architectures register themselves on import (they need ``register`` defined above)
from geoseg.models import deepglobe, resunet_a  # noqa: E402,F401
