"""Bundles: bit-exact round trip, pickles never executed, checkpoint import, show/list, ONNX parity, GSD check."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from affine import Affine
from click.testing import CliRunner, Result
from safetensors.torch import save_file

from geoseg.cli import main
from geoseg.errors import BundleError
from geoseg.infer import check_bundle_fits
from geoseg.models import BundleMeta, build_model, load_bundle, save_bundle
from geoseg.models.bundle import read_meta, resolve_bundle
from geoseg.models.cost import count_params, gflop_per_tile
from geoseg.scene import open_scene
from tests.conftest import CLASSES, TINY_ARGS


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def user_error(result: Result, *needles: str) -> str:
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: ") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def resunet_bundle(path: Path, bands: int = 4) -> Path:
    torch.manual_seed(1)
    args = dict(variant="d6", in_channels=bands, classes=3, width=4)
    model = build_model("resunet-a", **args)
    meta = BundleMeta(arch="resunet-a", arch_args=args, classes=CLASSES, band_names=tuple("bgrn"[:bands]),
                      band_indexes=tuple(range(1, bands + 1)), mean=(0.4,) * bands, std=(0.2,) * bands, gsd=0.3,
                      tile=64, halo=0, heads=model.extra_heads(),
                      provenance={"data": "sha256:abc", "recipe": "pipelines/resunet.yaml", "metrics": {"iou": 0.5}})
    return save_bundle(path, model, meta)


def test_bundle_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = resunet_bundle(tmp_path / "r.safetensors")
    torch.manual_seed(1)
    original = build_model("resunet-a", variant="d6", in_channels=4, classes=3, width=4).eval()
    bundle = load_bundle(path)
    assert bundle.meta == read_meta(path)
    assert bundle.meta.heads == (("boundary", 1), ("distance", 1), ("colour", 4))
    assert bundle.meta.provenance["metrics"] == {"iou": 0.5}
    saved, loaded = original.state_dict(), bundle.model.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert saved[key].dtype == loaded[key].dtype and torch.equal(saved[key], loaded[key]), key
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        assert torch.equal(original(x), bundle.model(x))


class Canary:
    """Unpickling this creates a file: proof that code ran from data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def canary_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / "CANARY"
    state = build_model("pixel-linear").state_dict()
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "hook": Canary(canary)}, path)
    assert not canary.exists()
    return path, canary


def test_pickle_with_canary_is_refused_and_never_run(canary_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    path, canary = canary_checkpoint
    for load in (resolve_bundle, load_bundle, read_meta):
        with pytest.raises(BundleError, match="pickle checkpoints are refused.*geoseg models import"):
            load(path)
    disguised = tmp_path / "evil.safetensors"  # the same pickle under a bundle's name
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(BundleError, match="not a readable safetensors bundle"):
        load_bundle(disguised)
    out = tmp_path / "b.safetensors"
    result = invoke(["models", "import", path, "--arch", "pixel-linear", "--classes", "bg,building,road",
                     "--out", out])
    user_error(result, "evil.pt", "refused", "weights_only=True")
    assert not canary.exists() and not out.exists()
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_import_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_model("smp:Unet", **TINY_ARGS).eval()
    ckpt = tmp_path / "trained.pth"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "imported.safetensors"
    args = {k: v for k, v in TINY_ARGS.items() if k != "classes"}
    result = invoke(["models", "import", ckpt, "--arch", "smp:Unet", "--arch-args", json.dumps(args),
                     "--classes", "background,building:#e31a1c,road", "--tile", "128", "--gsd", "0.3", "--out", out])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    meta = bundle.meta
    assert [c.name for c in meta.classes] == ["background", "building", "road"]
    assert meta.classes[1].colour == "#e31a1c" and meta.arch_args["classes"] == 3 and meta.gsd == 0.3
    measured = meta.provenance["halo_measured"]
    assert meta.halo == measured["halo"] and meta.halo % meta.stride == 0 and measured["tile"] == 128
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        assert torch.equal(model(x), bundle.model(x))
    # wrong architecture arguments: one line, no bundle written
    bad = invoke(["models", "import", ckpt, "--arch", "smp:Unet", "--classes", "bg,b,r", "--halo", "32",
                  "--out", tmp_path / "bad.safetensors"])
    user_error(bad, "trained.pth", "do not match smp:Unet", "--arch-args")
    assert not (tmp_path / "bad.safetensors").exists()
    # ResUNet-a's global max pooling (PSP) leaves an error floor: the import says so in one line
    torch.manual_seed(5)
    torch.save(build_model("resunet-a", classes=3, width=4).state_dict(), tmp_path / "r.pth")
    floor = invoke(["models", "import", tmp_path / "r.pth", "--arch", "resunet-a", "--arch-args", '{"width": 4}',
                    "--classes", "bg,b,r", "--tile", "64", "--out", tmp_path / "r.safetensors"])
    assert floor.exit_code == 0, floor.output
    assert floor.stderr.splitlines()[0].startswith("geoseg: warning: ") and "no halo under tile/2" in floor.stderr
    assert load_bundle(tmp_path / "r.safetensors").meta.heads == (("boundary", 1), ("distance", 1), ("colour", 3))
    exists = invoke(["models", "import", ckpt, "--arch", "smp:Unet", "--classes", "bg,b,r", "--out", out])
    user_error(exists, "exists", "--overwrite")


def test_models_list_and_show(tmp_path: Path) -> None:
    listing = invoke(["models", "list"])
    assert listing.exit_code == 0
    for name in ("unet-seresnext-aspp", "resunet-a", "smp:Segformer", "default: smp:Unet"):
        assert name in listing.stdout
    path = resunet_bundle(tmp_path / "r.safetensors")
    shown = invoke(["models", "show", path, "--measure-halo"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    bundle = load_bundle(path)
    assert info["arch"] == "resunet-a" and info["params"] == count_params(bundle.model)
    assert info["gflop_per_tile"] == round(gflop_per_tile(bundle.model, 4, 64), 3) > 0
    assert info["halo_measured"]["tile"] == 64 and info["halo_measured"]["halo"] % 32 == 0
    user_error(invoke(["models", "show", tmp_path / "nope.safetensors"]), "nope.safetensors", "not found")


def test_onnx_export_parity_and_deepness_metadata(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(4)
    # a real smp U-Net, shallow so that torch.export traces few operators (export time grows with the graph)
    args = dict(encoder_name="resnet18", encoder_depth=2, decoder_channels=(8, 8), classes=5, in_channels=3)
    meta = BundleMeta(arch="smp:Unet", arch_args=args, classes=CLASSES, heads=(("boundary", 1), ("distance", 1)),
                      tile=128, halo=32, gsd=0.3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    path = save_bundle(tmp_path / "h.safetensors", build_model("smp:Unet", **args), meta)
    out = tmp_path / "h.onnx"
    result = invoke(["models", "export", path, "--onnx", out])
    assert result.exit_code == 0, result.output
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["model_type"] == "Segmentor"
    assert props["class_names"] == {"0": "background", "1": "building", "2": "road"}
    assert props["resolution"] == pytest.approx(30.0) and props["tiles_size"] == 128
    assert props["tiles_overlap"] == 50 and props["standardization_mean"] == [0.4, 0.5, 0.6]
    assert props["standardization_std"] == [0.2, 0.25, 0.3] and props["geoseg"]["arch"] == "smp:Unet"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["classes", "heads"]
    assert session.get_inputs()[0].shape == ["batch", 3, 128, 128]
    x = np.random.default_rng(0).normal(size=(2, 3, 128, 128)).astype(np.float32)
    classes, heads = session.run(None, {session.get_inputs()[0].name: x})
    from geoseg.predict import Predictor

    expected = Predictor(load_bundle(path), torch.device("cpu")).predict(x, 2)
    np.testing.assert_allclose(classes, expected[:, :3], atol=1e-4, rtol=0)
    np.testing.assert_allclose(heads, expected[:, 3:], atol=1e-4, rtol=0)
    user_error(invoke(["models", "export", path, "--onnx", out]), "exists", "--overwrite")


@pytest.mark.parametrize("pixel, warns", [(0.5, False), (0.6, False), (0.7, True), (0.3, True)])
def test_gsd_more_than_25_percent_off_warns(pixel: float, warns: bool, make_scene: Any, tiny_bundle: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    scene = open_scene(make_scene(transform=Affine(pixel, 0, 500000, 0, -pixel, 5000000)))
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        check_bundle_fits(scene, read_meta(tiny_bundle), "tiny")
    records = [r.getMessage() for r in caplog.records if r.name == "geoseg"]
    assert len(records) == int(warns)
    if warns:
        assert "\n" not in records[0] and "GSD (0.5 m)" in records[0] and "gdalwarp -tr 0.5 0.5" in records[0]


def test_gsd_warning_is_one_line_on_the_cli(make_scene: Any, tiny_bundle: Path, tmp_path: Path) -> None:
    scene = make_scene(width=128, height=128, transform=Affine(2.0, 0, 500000, 0, -2.0, 5000000))
    result = invoke(["infer", scene, "--model", tiny_bundle, "--raster-out", tmp_path / "c.tif", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: warning: ") and "4.00x the model's GSD" in lines[0]
    assert (tmp_path / "c.tif").exists()


def test_dtype_without_input_range_fails_before_compute(make_scene: Any, tmp_path: Path) -> None:
    meta = BundleMeta(arch="pixel-linear", arch_args={}, classes=CLASSES, input_range={"uint8": 255.0})
    path = save_bundle(tmp_path / "u8.safetensors", build_model("pixel-linear"), meta)
    scene = make_scene(dtype="uint16")
    result = invoke(["infer", scene, "--model", path, "--raster-out", tmp_path / "c.tif"])
    user_error(result, "scene.tif", "no input range for uint16", "uint8")
    assert not (tmp_path / "c.tif").exists()


def test_bundle_without_geoseg_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3, 3, 1, 1)}, str(path))
    with pytest.raises(BundleError, match="no geoseg metadata"):
        load_bundle(path)
