"""DeepGlobe-style U-Net: an smp encoder (SE-ResNeXt50 by default), an ASPP bridge at the bottleneck and the smp
U-Net decoder, after the Neuromation DeepGlobe building entry. Every part is smp's own; only the wiring is here.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder

from geoseg.models.parts import pad_to_multiple, parse_heads


class UnetASPP(torch.nn.Module):
    """Encoder → ASPP (3 atrous rates + image pooling) on the deepest features → U-Net decoder → heads.

    The ASPP works at ``aspp_channels`` (256, DeepLabV3's width; at the encoder's 2048 it alone would add 113 M
    parameters). Returns ONE tensor ``(n, classes + extra, h, w)``: the class logits, then each extra head's
    logits in the order of ``heads`` (the bundle's ``BundleMeta.heads`` describes them). Inputs of any size
    work: they are padded to the encoder's output stride and the output is cropped back.
    """

    def __init__(self, encoder_name: str = "se_resnext50_32x4d", in_channels: int = 3, classes: int = 2,
                 encoder_depth: int = 5, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 atrous_rates: Sequence[int] = (12, 24, 36), aspp_channels: int = 256,
                 aspp_dropout: float = 0.0, heads: int | Sequence[Any] | None = None) -> None:
        super().__init__()
        if len(atrous_rates) != 3:
            raise ValueError(f"atrous_rates needs 3 rates (smp's ASPP), got {list(atrous_rates)}")
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=None)
        deepest = self.encoder.out_channels[-1]
        # smp's ASPP: 1x1 conv, three atrous 3x3 convs, image pooling, then a 1x1 projection
        self.bridge = ASPP(deepest, aspp_channels, atrous_rates, separable=False, dropout=aspp_dropout)
        channels = list(self.encoder.out_channels[:-1]) + [aspp_channels]
        self.decoder = UnetDecoder(encoder_channels=channels, decoder_channels=decoder_channels,
                                   n_blocks=encoder_depth)
        self.head_spec = (("segmentation", classes),) + parse_heads(heads)
        self.heads = torch.nn.ModuleDict({name: SegmentationHead(decoder_channels[-1], n, kernel_size=3)
                                          for name, n in self.head_spec})
        self.stride = self.encoder.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.stride)
        features = self.encoder(x)
        features = [*features[:-1], self.bridge(features[-1])]
        y = self.decoder(features)
        out = torch.cat([self.heads[name](y) for name, _ in self.head_spec], dim=1)
        return out[..., :h, :w]

    def extra_heads(self) -> tuple[tuple[str, int], ...]:
        """The heads after the class channels, for ``BundleMeta.heads``."""
        return self.head_spec[1:]


def unet_seresnext_aspp(**kwargs: Any) -> torch.nn.Module:
    """DeepGlobe-style U-Net + ASPP; any smp encoder via ``encoder_name`` (default ``se_resnext50_32x4d``)."""
    return UnetASPP(**kwargs)
