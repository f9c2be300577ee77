"""Validation through the real tiled inference path: the current weights are written as a bundle, ``infer``
runs on every validation region, and ``geoseg.evaluate`` scores the class raster and polygons."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.evaluate import pixel_counts
from geoseg.grid import Grid
from geoseg.infer import infer
from geoseg.metrics import object_scores, scores_from_counts
from geoseg.models.bundle import BundleMeta, save_bundle
from geoseg.pipeline import ClassPost, InferConfig
from geoseg.predict import forget_predictor
from geoseg.train.data import LabelledScene, Region
from geoseg.train.labels import LabelSource


CROP_ROWS = 1024


def crop(scene: LabelledScene, region: Region, folder: Path) -> Path:
    """The region as its own GeoTIFF (a whole scene is used as it is): inference sees only validation pixels."""
    if (region.row, region.col, region.height, region.width) == (0, 0, scene.height, scene.width):
        return scene.image
    out = folder / f"val_{region.scene}_{region.row}_{region.col}.tif"
    with rasterio.open(scene.image) as src:
        profile = src.profile | {"width": region.width, "height": region.height, "tiled": False,
                                 "transform": src.window_transform(region.window)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(out, "w", **profile) as dst:  # copied in strips: memory bounded for any region size
            for r0 in range(0, region.height, CROP_ROWS):
                strip = Window(0, r0, region.width, min(CROP_ROWS, region.height - r0))
                src_win = Window(region.window.col_off, region.window.row_off + r0, strip.width, strip.height)
                dst.write(src.read(window=src_win), window=strip)
                dst.write_mask(src.dataset_mask(window=src_win), window=strip)
    return out


def validate(model: object, meta: BundleMeta, scenes: list[LabelledScene], regions: list[Region], device: str,
             workdir: Path) -> dict[str, float]:
    """Pixel IoU per class and object F1 (SpaceNet matching) per polygon class, summed over the regions."""
    k = len(meta.classes)
    counts, matched, n_pred, n_truth = np.zeros((k, 3)), np.zeros(k), np.zeros(k), np.zeros(k)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".val-") as tmp:
        folder = Path(tmp)
        bundle = save_bundle(folder / "current.safetensors", model, meta)  # type: ignore[arg-type]
        post = {c.name: ClassPost(min_area_m2=0.0, simplify_m=0.0) for c in meta.classes}
        config = InferConfig(model=str(bundle), device=device, workers=1, post=post)
        try:
            for i, region in enumerate(regions):
                scene = scenes[region.scene]
                image = crop(scene, region, folder)
                classes, vectors = folder / f"c{i}.tif", folder / f"v{i}.gpkg"
                infer(image, vectors, config, raster_out=classes)
                with rasterio.open(classes) as src:
                    grid = Grid.of(src)
                pred = LabelSource(str(classes), scene.labels.classes, scene.labels.crs, raster=str(classes))
                counts += pixel_counts(pred, scene.labels, grid, k)
                if scene.labels.is_vector:
                    _objects(scene.labels, vectors, grid, meta, matched, n_pred, n_truth)
        finally:
            forget_predictor(str(bundle.resolve()))
    out: dict[str, float] = {}
    for c in range(1, k):
        name = meta.classes[c].name
        out[f"{name}_iou"] = scores_from_counts(*counts[c])["iou"]
        if n_truth[c] or n_pred[c]:
            p, r = matched[c] / max(n_pred[c], 1), matched[c] / max(n_truth[c], 1)
            out[f"{name}_object_f1"] = 2 * p * r / (p + r) if p + r else 0.0
    out["mean_iou"] = float(np.mean([out[f"{c.name}_iou"] for c in meta.classes[1:]]))
    return out


def _objects(truth: LabelSource, vectors: Path, grid: Grid, meta: BundleMeta, matched: np.ndarray,
             n_pred: np.ndarray, n_truth: np.ndarray) -> None:
    import pyogrio
    import shapely

    aoi = grid.footprint()
    layers = set(pyogrio.list_layers(vectors)[:, 0])
    for c, info in enumerate(meta.classes):
        layer = info.layer or f"{info.name}s"
        if c == 0 or "road" in info.name or layer not in layers:
            continue
        found = pyogrio.read_dataframe(vectors, layer=layer).geometry.values
        want = shapely.intersection(truth.geometries(c, aoi), aoi)
        s = object_scores(found, want[shapely.area(want) > 0])
        matched[c] += s["matched"]
        n_pred[c] += s["predicted"]
        n_truth[c] += s["truth"]

