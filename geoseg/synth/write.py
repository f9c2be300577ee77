"""Writing a scene to disk: a tiled GeoTIFF streamed block by block and its truth GeoPackage."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd
import pyogrio
import pyogrio.errors
import rasterio
import rasterio.errors
from rasterio.windows import Window

from geoseg.errors import ConfigError, OutputError
from geoseg.export import GPKG_CREATE
from geoseg.synth.model import make_truth
from geoseg.synth.render import label_window, render_window
from geoseg.synth.spec import LAYERS, SynthSpec
from geoseg.tempfiles import atomic_path

_BAND_NAMES = ("red", "green", "blue", "nir", "rededge", "swir1", "swir2")


def _write_labels(spec: SynthSpec, truth: dict[str, gpd.GeoDataFrame], path: Path, profile: dict,
                  block: int) -> None:
    """The class raster, block by block, each block labelled with its own window transform."""
    prof = {**profile, "count": 1, "dtype": "uint8", "nodata": None, "predictor": 2}
    prof.pop("photometric", None)
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, spec.height, block):
            for c in range(0, spec.width, block):
                win = Window(c, r, min(block, spec.width - c), min(block, spec.height - r))
                lab = label_window(truth, rasterio.windows.transform(win, spec.transform), (win.height, win.width))
                dst.write(lab[None], window=win)


def _write_truth(truth: dict[str, gpd.GeoDataFrame], path: Path) -> None:
    geom_types = {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString"}
    for i, layer in enumerate(LAYERS):
        pyogrio.write_dataframe(truth[layer], path, layer=layer, driver="GPKG", append=i > 0,
                                geometry_type=geom_types[layer], promote_to_multi=False,
                                **({} if i else {"dataset_options": GPKG_CREATE}))


def write_scene(spec: SynthSpec, out: str | Path, truth_out: str | Path | None = None, *, block: int = 1024,
                overwrite: bool = False, labels_out: str | Path | None = None) -> dict[str, gpd.GeoDataFrame]:
    """Write the scene as a tiled DEFLATE GeoTIFF and its truth as a GeoPackage, block by block.

    Memory stays bounded by ``block`` (the raster is never whole in memory). Both files are written under
    temporary names in their folders and renamed into place only when both are complete.
    Default truth path: ``<out stem>_truth.gpkg`` next to ``out``. ``labels_out``: also the class raster the
    painter used (0 background, 1 building, 2 road), the one the truth re-rasterises to. Returns the truth.
    """
    out = Path(out)
    truth_out = Path(truth_out) if truth_out is not None else out.with_name(f"{out.stem}_truth.gpkg")
    labels_out = Path(labels_out) if labels_out is not None else None
    paths = [out, truth_out] + ([labels_out] if labels_out else [])
    if len({p.resolve() for p in paths}) < len(paths):
        raise ConfigError(f"{out}: the scene, its truth and its labels need different paths")
    if block < 1:
        raise ConfigError(f"write_scene: block must be >= 1 pixel, got {block}")
    for path in paths:
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; use --overwrite to replace it")
    block = max(256, block // 256 * 256)  # whole GeoTIFF tiles per write
    truth = make_truth(spec)
    profile = dict(driver="GTiff", width=spec.width, height=spec.height, count=spec.bands, dtype=spec.dtype,
                   crs=rasterio.crs.CRS.from_user_input(spec.crs), transform=spec.transform, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=3 if spec.dtype == "float32" else 2,
                   interleave="pixel", BIGTIFF="IF_SAFER", nodata=0 if spec.nodata_border > 0 else None)
    if spec.bands == 3 and spec.dtype == "uint8":
        profile["photometric"] = "RGB"
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:  # every file renamed into place only once all are complete
            tmps = [stack.enter_context(atomic_path(p)) for p in paths]
            with rasterio.open(tmps[0], "w", **profile) as dst:
                names = ("pan",) if spec.bands == 1 else _BAND_NAMES + tuple(f"band{i}" for i in range(8, 17))
                for b in range(spec.bands):
                    dst.set_band_description(b + 1, names[b])
                dst.update_tags(geoseg_synth=json.dumps(asdict(spec)))
                for r in range(0, spec.height, block):
                    for c in range(0, spec.width, block):
                        win = Window(c, r, min(block, spec.width - c), min(block, spec.height - r))
                        dst.write(render_window(spec, truth, win), window=win)
            if labels_out:
                _write_labels(spec, truth, tmps[2], profile, block)
            _write_truth(truth, tmps[1])
    except (OSError, rasterio.errors.RasterioError, pyogrio.errors.DataSourceError,
            pyogrio.errors.DataLayerError) as err:
        raise OutputError(f"{out}: cannot write the scene ({err}); check the folder is writable") from err
    return truth

