"""Architectures by name, built from segmentation-models-pytorch parts.

The spine needs any smp architecture by name (``smp:Unet`` etc.); geoseg's own architectures (``deepglobe``,
``resunet_a``) export their builders and are listed here, so they never import the registry.
"""

from __future__ import annotations

from typing import Any, Callable

import segmentation_models_pytorch as smp  # imported once here: seconds of import never land in a run
import torch

from geoseg.errors import BundleError
from geoseg.models.deepglobe import unet_seresnext_aspp
from geoseg.models.resunet_a import resunet_a

Builder = Callable[..., torch.nn.Module]

SMP_ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
    "UPerNet", "Segformer",
)


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


def pixel_linear(in_channels: int = 3, classes: int = 3) -> torch.nn.Module:
    """Per-pixel linear classifier (a 1x1 convolution): a spectral baseline, and exact georeferencing tests."""
    return torch.nn.Conv2d(in_channels, classes, kernel_size=1)


# geoseg's own architectures: each module exports its builder, the registry imports it (no import cycle)
_REGISTRY: dict[str, Builder] = {
    "pixel-linear": pixel_linear,
    "resunet-a": resunet_a,
    "unet-seresnext-aspp": unet_seresnext_aspp,
}
