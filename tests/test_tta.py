"""``--tta``: probabilities averaged over flipped/turned views of each tile, inverted before the core crop, so
the run stays partition invariant and halo-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import ConfigError
from geoseg.models import load_bundle
from geoseg.pipeline import load_pipeline
from geoseg.tta import VIEWS, averaged
from tests.test_infer import run
from tests.test_models_bundle import invoke


def _views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"lr": torch.flip(x, (-1,)), "ud": torch.flip(x, (-2,)), "rot90": torch.rot90(x, 1, (-2, -1)),
            "transpose": x.transpose(-2, -1)}


def test_average_over_views_is_equivariant_where_the_model_is_not() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 5, padding=2))

    def probs(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x), 1)

    x = torch.rand(2, 3, 24, 24)
    with torch.inference_mode():
        plain, four, eight = probs(x), averaged(probs, x, 4), averaged(probs, x, 8)
        for name, view in _views(x).items():
            turned = _views(plain)[name]
            assert (probs(view) - turned).abs().max() > 1e-3, name  # the model alone is not equivariant
            torch.testing.assert_close(averaged(probs, view, 8), _views(eight)[name], rtol=0, atol=1e-6)
            if name in ("lr", "ud"):  # the 4 views are the flip group: equivariant under flips only
                torch.testing.assert_close(averaged(probs, view, 4), _views(four)[name], rtol=0, atol=1e-6)
            else:
                assert (averaged(probs, view, 4) - _views(four)[name]).abs().max() > 1e-4, name
        torch.testing.assert_close(four.sum(1), torch.ones(2, 24, 24))  # still probabilities
    assert averaged(probs, x, 1) is not None and len(VIEWS[8]) == 8
    with pytest.raises(ConfigError, match="tta 3"):
        averaged(probs, x, 3)


def whole_image_tta(bundle: Path, scene: Path, tile: int, halo: int, views: int) -> np.ndarray:
    """Reference: the views averaged over one forward pass of the whole (reflect-padded) scene each."""
    b = load_bundle(bundle)
    with rasterio.open(scene) as src:
        img = src.read().astype(np.float32)
    x = (img / 255.0 - 0.5) / 0.25
    core = tile - 2 * halo
    h, w = x.shape[1:]
    pad_h, pad_w = -(-h // core) * core - h, -(-w // core) * core - w
    xp = np.pad(x, ((0, 0), (halo, pad_h + halo), (halo, pad_w + halo)), mode="reflect")
    with torch.inference_mode():
        probs = averaged(lambda t: torch.softmax(b.model(t), 1), torch.from_numpy(xp[None]), views)[0].numpy()
    return probs[:, halo:halo + h, halo:halo + w]


@pytest.mark.parametrize("views", [4, 8])
def test_tta_is_partition_invariant_and_halo_exact(views: int, make_scene, tiny_bundle: Path,
                                                    tmp_path: Path) -> None:
    scene = make_scene(width=300, height=260)
    base = run(scene, tmp_path, "a", tiny_bundle, tile=256, halo=64, block_size=128, workers=1, tta=views)
    other = run(scene, tmp_path, "b", tiny_bundle, tile=256, halo=64, block_size=4096, workers=2, tta=views)
    np.testing.assert_array_equal(other[0], base[0])
    np.testing.assert_array_equal(other[1], base[1])
    ref = whole_image_tta(tiny_bundle, scene, 256, 64, views)
    assert np.abs(base[0] - ref).max() < 1e-3
    plain = run(scene, tmp_path, "p", tiny_bundle, tile=256, halo=64, block_size=128, workers=1)
    assert np.abs(plain[0] - ref).max() > 1e-2  # the views changed the output: the checks above are not vacuous


def test_graph_runtime_takes_tta_like_torch(make_scene, tiny_bundle: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.delenv("GEOSEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the exported graph stays in this test
    scene = make_scene(width=200, height=150)
    torch_out = run(scene, tmp_path, "t", tiny_bundle, block_size=128, tta=8)
    graph_out = run(scene, tmp_path, "g", tiny_bundle, block_size=128, tta=8, runtime="onnxruntime")
    assert np.abs(torch_out[0] - graph_out[0]).max() < 1e-4


def test_tta_from_pipeline_and_cli(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("infer:\n  tta: 8\n")
    bad.write_text("infer:\n  tta: 3\n")
    assert load_pipeline(good).tta == 8
    with pytest.raises(ConfigError, match="tta"):
        load_pipeline(bad)
    result = invoke(["infer", tmp_path / "none.tif", "--tta", "3"])
    assert result.exit_code == 2 and "--tta" in result.output
