"""The class COG carries its colours (a GDAL colour table in the file) and class names (GDAL's PAM sidecar), so it
opens in colour, with a legend, wherever it is opened. QGIS's reading of both is tested in tests/test_qgis.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

from geoseg.infer import infer
from geoseg.models.bundle import read_meta
from geoseg.pipeline import InferConfig
from geoseg.styles import class_palette


def category_names(tif: Path) -> list[str]:
    root = ET.parse(f"{tif}.aux.xml").getroot()
    return [c.text or "" for c in root.findall("./PAMRasterBand[@band='1']/CategoryNames/Category")]


@pytest.mark.parametrize("resample", [False, True], ids=["native", "resampled"])
def test_class_cog_has_colour_table_and_names(make_scene, tiny_bundle: Path, tmp_path: Path, resample: bool) -> None:
    # the resampled case reads a 0.25 m scene at the model's 0.5 m and writes the COG back through a warped VRT
    scene = make_scene(width=160, height=120, transform=Affine(0.25 if resample else 0.5, 0, 500000, 0,
                                                                 -0.25 if resample else -0.5, 5000000))
    cog = tmp_path / "classes.tif"
    infer(scene, None, InferConfig(model=str(tiny_bundle), workers=1, resample=resample or None), raster_out=cog)
    meta = read_meta(str(tiny_bundle))
    with rasterio.open(cog) as src:
        assert src.colorinterp == (ColorInterp.palette,)
        cmap = src.colormap(1)
        assert src.profile["driver"] == "GTiff" and src.overviews(1) is not None
    for k, c in enumerate(meta.classes):
        rgb = tuple(int(c.colour[i:i + 2], 16) for i in (1, 3, 5))
        assert cmap[k][:3] == rgb, (k, c)  # a TIFF colour map holds RGB only (alpha reads back as 255)
    assert category_names(cog) == [c.name for c in meta.classes]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.qml", "classes.tif",
                                                           "classes.tif.aux.xml", "scene.tif"]


def test_palette_names_are_escaped() -> None:
    from geoseg.models import BundleMeta, ClassInfo

    meta = BundleMeta(arch="smp:Unet", arch_args={}, classes=(ClassInfo("background"), ClassInfo("a<b & c", "x",
                                                                                                  "#102030")))
    pal = class_palette(meta)
    assert pal.colormap == {0: (0, 0, 0, 0), 1: (16, 32, 48, 255)}
    root = ET.fromstring(pal.pam_xml())
    assert [c.text for c in root.iter("Category")] == ["background", "a<b & c"]
