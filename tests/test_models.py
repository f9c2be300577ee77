"""Architectures: forward shapes at odd sizes and band counts, smp parts and parameter counts, measured halos."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder

from geoseg.cli import main
from geoseg.errors import BundleError
from geoseg.models import build_model, list_architectures, load_bundle
from geoseg.models.cost import count_params, gflop_per_tile, model_heads, model_stride
from geoseg.models.receptive import measure_halo
from geoseg.models.registry import SMP_ARCHITECTURES
from geoseg.models.resunet_a import PSPPooling, ResBlockA

SMALL = "tu-mobilenetv2_035"
TINY_DEEPGLOBE = dict(encoder_name=SMALL, decoder_channels=(16, 16, 8, 8, 8), aspp_channels=16)


def forward(model: torch.nn.Module, bands: int, h: int, w: int) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.inference_mode():
        return model.eval()(torch.randn(1, bands, h, w))


def test_registry_lists_every_architecture() -> None:
    names = list_architectures()
    assert {"unet-seresnext-aspp", "resunet-a", "pixel-linear"} <= set(names)
    assert {f"smp:{a}" for a in SMP_ARCHITECTURES} <= set(names)
    with pytest.raises(BundleError, match="unknown architecture 'resunet-b'.*resunet-a.*smp:Segformer"):
        build_model("resunet-b")
    with pytest.raises(BundleError, match="architecture resunet-a: .*'depth'.*--arch-args"):
        build_model("resunet-a", depth=4)


@pytest.mark.parametrize("arch", SMP_ARCHITECTURES)
def test_smp_architecture_shapes(arch: str) -> None:
    """Every smp architecture: right output at a stride multiple; at an odd size it works or says what to pad to."""
    model = build_model(f"smp:{arch}", encoder_name=SMALL, in_channels=8, classes=5)
    n = 256 if arch == "PAN" else 64  # PAN's feature pyramid attention pools the 1/32 map three more times
    assert forward(model, 8, n, n).shape == (1, 5, n, n)
    try:
        out = forward(model, 8, n + 1, n - 1)
    except RuntimeError as err:
        s = model_stride(model)  # what a bundle records as BundleMeta.stride
        assert f"divisible by {s}" in str(err) and f"({-(-(n + 1) // s) * s}, {-(-(n - 1) // s) * s})" in str(err)
    else:
        assert out.shape == (1, 5, n + 1, n - 1)


@pytest.mark.parametrize("bands, h, w", [(4, 67, 45), (8, 64, 96)])
def test_unet_seresnext_aspp_shapes(bands: int, h: int, w: int) -> None:
    model = build_model("unet-seresnext-aspp", in_channels=bands, classes=3, heads=["boundary", ["distance", 2]],
                        atrous_rates=(2, 4, 6), **TINY_DEEPGLOBE)
    assert forward(model, bands, h, w).shape == (1, 3 + 1 + 2, h, w)
    assert model_heads(model) == (("boundary", 1), ("distance", 2))
    assert model_stride(model) == 32
    # built from smp's own parts, with the atrous rates asked for
    assert isinstance(model.bridge, ASPP) and isinstance(model.decoder, UnetDecoder)
    dilations = [m.dilation[0] for m in model.bridge.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1]
    assert dilations == [2, 4, 6]
    assert any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.bridge.modules())  # image pooling


def test_unet_seresnext_aspp_heads_count() -> None:
    model = build_model("unet-seresnext-aspp", classes=2, heads=3, **TINY_DEEPGLOBE)
    assert model_heads(model) == (("boundary", 1), ("distance", 1), ("extra3", 1))
    assert forward(model, 3, 64, 64).shape == (1, 5, 64, 64)


def test_encoder_parameter_counts_match_smp_reference() -> None:
    """smp's encoder table (docs/encoders.rst) publishes whole millions: se_resnext50_32x4d 25M, resnet34 21M."""
    model = build_model("unet-seresnext-aspp")  # the default: SE-ResNeXt50 (built once, never run)
    assert model.encoder.__class__.__name__ == "SENetEncoder"
    assert count_params(model.encoder) // 10**6 == 25
    resnet34 = build_model("unet-seresnext-aspp", encoder_name="resnet34")
    assert count_params(resnet34.encoder) // 10**6 == 21
    # the encoder is smp's: exactly the parameters of get_encoder's
    assert count_params(resnet34.encoder) == count_params(get_encoder("resnet34", weights=None))
    # 8 bands change only the first convolution: 5 extra input channels x 64 filters x 7 x 7
    wide = build_model("unet-seresnext-aspp", encoder_name="resnet34", in_channels=8)
    assert count_params(wide.encoder) - count_params(resnet34.encoder) == 5 * 64 * 7 * 7


@pytest.mark.parametrize("variant, stride, bands", [("d6", 32, 4), ("d7", 64, 8)])
def test_resunet_a_shapes(variant: str, stride: int, bands: int) -> None:
    model = build_model("resunet-a", variant=variant, in_channels=bands, classes=3, width=4)
    h, w = 2 * stride + 3, stride - 5
    assert forward(model, bands, h, w).shape == (1, 3 + 1 + 1 + bands, h, w)
    assert model_heads(model) == (("boundary", 1), ("distance", 1), ("colour", bands))
    assert model_stride(model) == stride
    levels = 6 if variant == "d6" else 7
    blocks = [m for m in model.modules() if isinstance(m, ResBlockA)]
    assert len(blocks) == 2 * levels - 1  # encoder levels + decoder levels
    assert [len(b.branches) for b in blocks[:2]] == [4, 4]  # atrous rates 1, 3, 15, 31 at full resolution
    assert sum(isinstance(m, PSPPooling) for m in model.modules()) == 2  # bottleneck and before the heads


def test_resunet_a_single_task_and_errors() -> None:
    model = build_model("resunet-a", classes=4, width=4, multitask=False)
    assert forward(model, 3, 64, 64).shape == (1, 4, 64, 64)
    assert model_heads(model) == ()
    with pytest.raises(ValueError, match="variant 'd8'.*d6, d7"):
        build_model("resunet-a", variant="d8")


def test_gflop_count() -> None:
    """FlopCounterMode counts a 1x1 convolution as 2 x in x out x pixels."""
    model = build_model("pixel-linear", in_channels=4, classes=3)
    assert gflop_per_tile(model, 4, 100) == pytest.approx(2 * 4 * 3 * 100 * 100 / 1e9)


class Stack(torch.nn.Module):
    """Five 3x3 convolutions with positive weights: the output reaches exactly 5 px; optional global mean."""

    def __init__(self, global_pool: bool = False) -> None:
        super().__init__()
        self.convs = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(5)])
        for conv in self.convs:
            torch.nn.init.constant_(conv.weight, 0.2)
        self.global_pool = global_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        return y + 0.01 * y.mean(dim=(2, 3), keepdim=True) if self.global_pool else y


def test_measure_halo_finds_the_receptive_field() -> None:
    report = measure_halo(Stack(), 1, tile=64, stride=4)
    # zero padding at the tile edge reaches 5 px in: exact from the first stride multiple past it
    assert report.exact and report.halo == 8
    assert report.errors[0] > 0.1 and report.errors[4] > 1e-3 and report.errors[8] <= 1e-5
    linear = measure_halo(build_model("pixel-linear", in_channels=2, classes=2), 2, tile=32, stride=4)
    assert linear.exact and linear.halo == 0
    # global pooling: the tile's mean differs from the image's, so no halo makes it exact; the error has a floor
    pooled = measure_halo(Stack(global_pool=True), 1, tile=64, stride=4, tol=1e-6)
    assert not pooled.exact and pooled.halo == 28 and min(pooled.errors.values()) > 1e-6


def test_bench_model_prints_json() -> None:
    result = CliRunner().invoke(main, ["bench", "model", "--model", "pixel-linear", "--tile", "32", "--bands", "4",
                                       "--repeat", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bench"] == "model" and report["tile"] == 32 and report["device"] == "cpu"
    (row,) = report["models"]
    assert row["model"] == "pixel-linear" and row["params_m"] == round((4 * 3 + 3) / 1e6, 2)
    assert row["cpu_tiles_per_s_1_thread"] > 0 and row["cpu_tiles_per_s_all_threads"] > 0
    assert "cuda_bf16_tiles_per_s" not in row  # no GPU here: the CUDA path is not taken


def test_bundled_model_halo_is_enough_by_measure() -> None:
    """The shipped bundle's halo is at least what measure_halo recommends for it (measured here at 512 px)."""
    bundle = load_bundle("default")
    report = measure_halo(bundle.model, bundle.meta.n_bands, 512, stride=bundle.meta.stride,
                          n_classes=len(bundle.meta.classes))
    assert report.exact and report.halo <= bundle.meta.halo
    assert report.errors[report.halo - bundle.meta.stride] > 1e-3  # the halo found is the smallest that works
