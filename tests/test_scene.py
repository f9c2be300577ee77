"""Reading scenes at the library level: reflect padding, validity masks, dtypes and degenerate shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.tiling import reflect_index
from geoseg.models import BundleMeta, ClassInfo
from geoseg.scene import normalise, open_scene, read_block

META = BundleMeta(arch="smp:Unet", arch_args={}, classes=(ClassInfo("background"), ClassInfo("building")),
                  mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
RGB = (1, 2, 3)


# --- reflect indexing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 64])
def test_reflect_index_equals_numpy_pad_reflect(n: int) -> None:
    """Pads from 0 up to several times the array length, on each side independently."""
    base = np.arange(n)
    for before in range(0, 4 * n + 6):
        for after in sorted({0, 1, n - 1, n, n + 1, before, 3 * n + 2}):
            expected = np.pad(base, (before, after), mode="reflect")
            got = reflect_index(np.arange(-before, n + after), n)
            assert np.array_equal(got, expected), (n, before, after)


def test_reflect_index_any_start() -> None:
    """Spans far from the scene (any offset, not just symmetric pads) stay inside and mirror correctly."""
    n = 6
    padded = np.pad(np.arange(n), (100, 100), mode="reflect")
    for start in range(-100, n + 60, 7):
        idx = np.arange(start, start + 40)
        assert np.array_equal(reflect_index(idx, n), padded[idx + 100])


# --- reading blocks ---------------------------------------------------------------------------------------------

def test_read_block_past_the_edges_is_numpy_reflect(make_scene: Any) -> None:
    info = open_scene(make_scene(width=90, height=70))
    with rasterio.open(info.path) as src:
        full = src.read()
    data, valid = read_block(info, RGB, Window.from_slices((-40, 70 + 150), (-100, 90 + 30), boundless=True))
    expected = np.pad(full, ((0, 0), (40, 150), (100, 30)), mode="reflect")
    assert data.dtype == np.uint8 and np.array_equal(data, expected)
    assert valid.shape == data.shape[1:] and valid.all()


def test_read_block_inside_reads_only_the_window(make_scene: Any) -> None:
    info = open_scene(make_scene())
    with rasterio.open(info.path) as src:
        full = src.read()
    data, valid = read_block(info, (3, 1), Window.from_slices((10, 75), (130, 290), boundless=True))
    assert np.array_equal(data, full[[2, 0], 10:75, 130:290]) and valid.all()


@pytest.mark.parametrize("width, height", [(1, 200), (300, 1), (1, 1)])
def test_one_pixel_wide_scene(width: int, height: int, make_scene: Any) -> None:
    info = open_scene(make_scene(width=width, height=height))
    assert (info.width, info.height) == (width, height)
    with rasterio.open(info.path) as src:
        full = src.read()
    data, valid = read_block(info, RGB, Window.from_slices((-32, height + 32), (-32, width + 32), boundless=True))
    assert data.shape == (3, height + 64, width + 64) and valid.all()
    assert np.array_equal(data, np.pad(full, ((0, 0), (32, 32), (32, 32)), mode="reflect"))


def test_one_pixel_wide_scene_end_to_end(tmp_path: Path, make_scene: Any, tiny_bundle: Path) -> None:
    from geoseg.infer import infer
    from geoseg.pipeline import InferConfig

    scene = make_scene(width=1, height=150)
    summary = infer(scene, tmp_path / "b.gpkg", InferConfig(model=str(tiny_bundle), tile=128, halo=32, workers=1),
                    raster_out=tmp_path / "c.tif")
    assert summary.tiles_run == 3
    with rasterio.open(tmp_path / "c.tif") as src:
        classes = src.read(1)
        assert src.shape == (150, 1) and src.crs == "EPSG:32631"
    assert set(np.unique(classes)) <= {0, 1, 2}


# --- validity ---------------------------------------------------------------------------------------------------

def _pixels(bands: int = 3, dtype: str = "uint8", height: int = 200, width: int = 300) -> np.ndarray:
    return np.random.default_rng(5).integers(1, 250, (bands, height, width)).astype(dtype)


def test_nodata_is_invalid_when_every_band_is_nodata(make_scene: Any) -> None:
    data = _pixels()
    data[:, 20:40, 50:90] = 0
    data[0, 100:110, 100:110] = 0  # only red is 0: a real (dark red) pixel, still valid
    info = open_scene(make_scene(data=data, nodata=0))
    got, valid = read_block(info, RGB, Window.from_slices((0, 200), (0, 300), boundless=True))
    assert np.array_equal(got, data)
    expected = np.ones((200, 300), bool)
    expected[20:40, 50:90] = False
    assert np.array_equal(valid, expected)


def test_internal_mask_is_invalid(make_scene: Any) -> None:
    path = make_scene(data=_pixels())
    mask = np.full((200, 300), 255, np.uint8)
    mask[150:, :60] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    assert not list(path.parent.glob("*.msk")), "the mask should be internal"
    info = open_scene(path)
    _, valid = read_block(info, RGB, Window.from_slices((-10, 210), (-10, 310), boundless=True))
    assert np.array_equal(valid, np.pad(mask > 0, 10, mode="reflect"))


def test_alpha_band_masks_and_is_not_a_data_band(make_scene: Any) -> None:
    data = _pixels(bands=4)
    data[3] = 255
    data[3, :30, 250:] = 0
    path = make_scene(data=data, bands=4)  # GDAL marks a 4 x uint8 band as RGBA by default
    info = open_scene(path)
    assert info.count == 4 and info.data_bands == 3
    got, valid = read_block(info, RGB, Window.from_slices((0, 200), (0, 300), boundless=True))
    assert np.array_equal(got, data[:3])
    assert np.array_equal(valid, data[3] > 0)


def test_non_finite_floats_and_float_nodata_are_invalid(make_scene: Any) -> None:
    data = np.random.default_rng(2).random((3, 200, 300)).astype(np.float32)
    data[1, 5, 7] = np.nan
    data[2, 50, 60] = np.inf
    data[:, 100:120, 0:10] = -9999.0
    info = open_scene(make_scene(data=data, dtype="float32", nodata=-9999.0))
    _, valid = read_block(info, RGB, Window.from_slices((0, 200), (0, 300), boundless=True))
    expected = np.ones((200, 300), bool)
    expected[5, 7] = expected[50, 60] = False
    expected[100:120, 0:10] = False
    assert np.array_equal(valid, expected)
    x = normalise(data, valid, META.scale_for(data.dtype), META.mean, META.std)
    assert np.isfinite(x).all() and (x[:, ~valid] == 0).all()


# --- dtypes -----------------------------------------------------------------------------------------------------

def test_uint16_and_float32_normalise_like_uint8(make_scene: Any) -> None:
    base = _pixels()
    variants = {"uint8": base, "uint16": base.astype(np.uint16) * 257, "float32": base.astype(np.float32) / 255}
    out = {}
    for dtype, data in variants.items():
        info = open_scene(make_scene(f"{dtype}.tif", data=data, dtype=dtype))
        assert info.dtype == dtype
        got, valid = read_block(info, RGB, Window.from_slices((-20, 220), (-20, 320), boundless=True))
        assert got.dtype == np.dtype(dtype) and valid.all()
        out[dtype] = normalise(got, valid, META.scale_for(got.dtype), META.mean, META.std)
    expected = (np.pad(base, ((0, 0), (20, 20), (20, 20)), mode="reflect") / 255.0
                - np.array(META.mean)[:, None, None]) / np.array(META.std)[:, None, None]
    for dtype, x in out.items():
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, expected, atol=1e-5, err_msg=dtype)


def test_unsupported_dtype_is_refused_before_compute(tmp_path: Path, make_scene: Any, tiny_bundle: Path) -> None:
    from geoseg.errors import SceneError
    from geoseg.infer import infer
    from geoseg.pipeline import InferConfig

    scene = make_scene(data=_pixels(dtype="int16"), dtype="int16")
    with pytest.raises(SceneError, match="int16"):
        infer(scene, tmp_path / "b.gpkg", InferConfig(model=str(tiny_bundle), tile=128, halo=32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
