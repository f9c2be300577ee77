"""Layer styles so QGIS opens every output styled: QML (and a plain SLD) for the vector layers and a colour table
with category names for the class raster, all from the bundle's class colours.

QGIS reads the ``layer_styles`` table of a GeoPackage and applies the row marked ``useAsDefault`` when the
layer is opened; the columns follow QGIS's own schema for that table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from geoseg.tempfiles import atomic_path

if TYPE_CHECKING:  # only for hints: the vector writer must not pull torch in
    from geoseg.models.bundle import BundleMeta
    from geoseg.vectorize.options import VectorSpec

LAYER_STYLES_SQL = """CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
  useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


@dataclass(frozen=True)
class LayerStyle:
    """One layer's default style."""

    layer: str
    geometry: str   # "Polygon" or "LineString"
    colour: str     # "#rrggbb"
    qml: str
    sld: str


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        return (128, 128, 128)
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _mix(rgb: tuple[int, int, int], other: int, t: float) -> tuple[int, int, int]:
    r, g, b = (round(v + (other - v) * t) for v in rgb)
    return r, g, b


def _options(values: dict[str, str]) -> str:
    return "".join(f'<Option type="QString" name="{k}" value={quoteattr(v)}/>' for k, v in values.items())


def qml(geometry: str, colour: str) -> str:
    """A single-symbol QGIS style: translucent fill with a darker outline, or a solid line."""
    rgb = _rgb(colour)
    if geometry == "LineString":
        kind, cls, geom_type = "line", "SimpleLine", 1
        opts = {"line_color": "{},{},{},255".format(*rgb), "line_width": "0.6", "line_width_unit": "MM",
                "line_style": "solid", "capstyle": "round", "joinstyle": "round"}
    else:
        kind, cls, geom_type = "fill", "SimpleFill", 2
        opts = {"color": "{},{},{},110".format(*rgb), "outline_color": "{},{},{},255".format(*_mix(rgb, 0, 0.35)),
                "outline_width": "0.3", "outline_width_unit": "MM", "outline_style": "solid", "style": "solid",
                "joinstyle": "miter"}
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
            '<qgis version="3.22.0" styleCategories="Symbology">'
            '<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0"><symbols>'
            f'<symbol type="{kind}" name="0" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<data_defined_properties><Option type="Map"><Option type="QString" name="name" value=""/>'
            '<Option name="properties"/><Option type="QString" name="type" value="collection"/></Option>'
            f'</data_defined_properties><layer class="{cls}" enabled="1" pass="0" locked="0">'
            f'<Option type="Map">{_options(opts)}</Option></layer></symbol></symbols>'
            '<rotation/><sizescale/></renderer-v2><blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>'
            f'<layerGeometryType>{geom_type}</layerGeometryType></qgis>')


def sld(layer: str, geometry: str, colour: str) -> str:
    """The same style as OGC SLD 1.1 (for tools other than QGIS)."""
    hexc = "#{:02x}{:02x}{:02x}".format(*_rgb(colour))
    if geometry == "LineString":
        body = (f'<se:LineSymbolizer><se:Stroke><se:SvgParameter name="stroke">{hexc}</se:SvgParameter>'
                '<se:SvgParameter name="stroke-width">2</se:SvgParameter></se:Stroke></se:LineSymbolizer>')
    else:
        body = (f'<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">{hexc}</se:SvgParameter>'
                '<se:SvgParameter name="fill-opacity">0.43</se:SvgParameter></se:Fill><se:Stroke>'
                f'<se:SvgParameter name="stroke">{hexc}</se:SvgParameter></se:Stroke></se:PolygonSymbolizer>')
    return ('<?xml version="1.0" encoding="UTF-8"?><StyledLayerDescriptor version="1.1.0" '
            'xmlns="http://www.opengis.net/sld" xmlns:se="http://www.opengis.net/se">'
            f'<NamedLayer><se:Name>{layer}</se:Name><UserStyle><se:Name>{layer}</se:Name><se:FeatureTypeStyle>'
            f'<se:Rule><se:Name>{layer}</se:Name>{body}</se:Rule></se:FeatureTypeStyle></UserStyle></NamedLayer>'
            '</StyledLayerDescriptor>')


def layer_styles(vspec: "VectorSpec | None", meta: "BundleMeta") -> dict[str, LayerStyle]:
    """Default style of every output layer, coloured from the bundle's ``ClassInfo.colour``."""
    out: dict[str, LayerStyle] = {}
    if vspec is None:
        return out
    for c in vspec.classes:
        colour = meta.classes[c.k].colour
        out[c.layer] = LayerStyle(c.layer, "Polygon", colour, qml("Polygon", colour), sld(c.layer, "Polygon", colour))
        if c.network:  # centerlines: the class colour, lightened, drawn over the darker surface
            light = "#{:02x}{:02x}{:02x}".format(*_mix(_rgb(colour), 255, 0.6))
            out[c.line_layer] = LayerStyle(c.line_layer, "LineString", light, qml("LineString", light),
                                           sld(c.line_layer, "LineString", light))
    return out


@dataclass(frozen=True)
class ClassPalette:
    """How the class raster is drawn: a GDAL colour table (in the file) and category names (GDAL's PAM sidecar,
    ``<file>.aux.xml``, since GeoTIFF has no tag for them). QGIS reads both and opens the raster paletted, one
    legend entry per class with its name. Background is transparent (alpha 0) where the reader keeps alpha (the
    QGIS plugin's renderer); a TIFF colour map itself holds RGB only."""

    colormap: dict[int, tuple[int, int, int, int]]
    names: tuple[str, ...]

    def pam_xml(self) -> str:
        """GDAL's PAM document with the category names of band 1 (index = pixel value)."""
        cats = "".join(f"<Category>{escape(n)}</Category>" for n in self.names)
        return (f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{cats}</CategoryNames>'
                "</PAMRasterBand></PAMDataset>\n")


    def qml(self) -> str:
        """A QGIS paletted style with exactly these classes (a TIFF colour map always has 256 entries, which QGIS
        would list one by one), transparent background."""
        entries = "".join(f'<paletteEntry value="{k}" color="#{r:02x}{g:02x}{b:02x}" alpha="{a}" '
                          f'label={quoteattr(self.names[k])}/>' for k, (r, g, b, a) in self.colormap.items())
        return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
                '<qgis version="3.22.0" styleCategories="Symbology"><pipe>'
                '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">'
                f"<rasterTransparency/><colorPalette>{entries}</colorPalette></rasterrenderer></pipe></qgis>\n")


def class_palette(meta: "BundleMeta") -> ClassPalette:
    """The bundle's class colours as a colour table: class k is pixel value k (background 0, transparent)."""
    colormap = {k: (*_rgb(c.colour), 0 if k == 0 else 255) for k, c in enumerate(meta.classes)}
    return ClassPalette(colormap, tuple(c.name for c in meta.classes))


def write_class_sidecars(path: str | os.PathLike[str], palette: ClassPalette) -> list[Path]:
    """``<path>.aux.xml`` (GDAL's category names) and ``<stem>.qml`` (the style QGIS loads by default when it opens
    the file), each written to a temporary name and renamed."""
    path = Path(path)
    out = []
    for side, text in ((Path(f"{path}.aux.xml"), palette.pam_xml()), (path.with_suffix(".qml"), palette.qml())):
        with atomic_path(side) as tmp:
            tmp.write_text(text, encoding="utf-8")
        out.append(side)
    return out
