"""Score a prediction against ground truth: pixel metrics per class (window by window), the SpaceNet building
metric, APLS-style road connectivity and, on request, the disagreement between overlapping tiles.

Predictions and truths are either vectors (GeoPackage or any OGR source, one layer per class) or class
rasters; both sides are rasterised on one :class:`~geoseg.grid.Grid`, window by window, on the window's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.errors import ConfigError
from geoseg.grid import Grid
from geoseg.labels import IGNORE, LabelSource, load_labels
from geoseg.metrics import apls, confusion, line_scores, object_scores, scores_from_counts

DEFAULT_CLASSES = ({"name": "background"}, {"name": "building", "layer": "buildings"},
                   {"name": "road", "layer": "roads"})
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img")
APLS_MAX_PX = 4096  # the road graph is built on a grid of at most this many pixels a side (coarser if needed)


def is_raster(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def grid_of(pred: str | Path, truth: str | Path, resolution: float | None) -> Grid:
    """The prediction raster's grid, else the truth raster's, else the truth vectors' extent at ``resolution``."""
    for path in (pred, truth):
        if is_raster(path):
            with rasterio.open(path) as src:
                return Grid.of(src)
    import pyogrio
    from rasterio.warp import transform_bounds

    def bounds(path: str | Path) -> tuple[np.ndarray, object]:
        # geometry layers only: geoseg's GeoPackages also hold QGIS's layer_styles table
        infos = [pyogrio.read_info(path, layer=name) for name, kind in pyogrio.list_layers(path) if kind]
        return np.array([i["total_bounds"] for i in infos if i["features"]], float).reshape(-1, 4), infos[0]["crs"]

    boxes, crs = bounds(truth)
    if not len(boxes):
        raise ConfigError(f"{truth}: no features in any layer; nothing to score against")
    if Path(pred).exists():  # false positives outside the truth's extent count too
        pred_boxes, pred_crs = bounds(pred)
        boxes = np.vstack([boxes] + [transform_bounds(pred_crs, crs, *b) for b in pred_boxes])
    x0, y0, x1, y1 = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    res = resolution or 0.5
    return Grid(Affine(res, 0, x0, 0, -res, y1), max(1, int(np.ceil((x1 - x0) / res))),
                max(1, int(np.ceil((y1 - y0) / res))), CRS.from_user_input(crs))


def label_source(path: str | Path, grid: Grid, classes: tuple[dict, ...], what: str) -> LabelSource:
    """Either side as labels on the grid's CRS (vectors reprojected, rasters warped when not aligned)."""
    if not Path(path).exists():
        raise ConfigError(f"{path}: {what} not found; check the path")
    kind = {"label_raster": str(path)} if is_raster(path) else {"labels": str(path)}
    return load_labels(str(path), grid, classes, required=what == "truth", missing_ok=True, **kind)


def unlabelled_classes(truth: str | Path, classes: tuple[dict, ...]) -> list[str]:
    """Classes a vector truth has no layer for: not scored (a buildings-only truth scores buildings only)."""
    if is_raster(truth) or not Path(truth).exists():
        return []
    import pyogrio

    layers = set(pyogrio.list_layers(truth)[:, 0])
    wanted = {c["name"]: c.get("layer") or f"{c['name']}s" for c in classes[1:]}
    missing = [name for name, layer in wanted.items() if layer not in layers]
    if len(missing) == len(wanted):
        raise ConfigError(f"{truth}: has none of the class layers {', '.join(wanted.values())} (its layers: "
                          f"{', '.join(sorted(layers))}); name the classes with --classes")
    return missing


def pixel_counts(pred: LabelSource, truth: LabelSource, grid: Grid, n_classes: int, window: int = 2048,
                 area: Window | None = None) -> np.ndarray:
    """``(n_classes, 3)`` tp/fp/fn pixel counts, window by window; pixels unlabelled on either side skipped."""
    counts = np.zeros((n_classes, 3))
    area = area or grid.full
    for r in range(int(area.row_off), int(area.row_off + area.height), window):
        for c in range(int(area.col_off), int(area.col_off + area.width), window):
            win = Window(c, r, window, window).intersection(area)
            p, t = pred.window(grid.window(win)), truth.window(grid.window(win))
            valid = (p != IGNORE) & (t != IGNORE)
            for k in range(1, n_classes):
                counts[k] += confusion((p == k) & valid, (t == k) & valid)
    return counts


def road_masks(pred: LabelSource, truth: LabelSource, grid: Grid, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Both road masks on a grid of at most APLS_MAX_PX a side; returns the pixel size factor used."""
    factor = max(1.0, max(grid.width, grid.height) / APLS_MAX_PX)
    coarse = grid.resized(max(1, int(grid.height / factor)), max(1, int(grid.width / factor)))
    return pred.window(coarse) == k, truth.window(coarse) == k, factor


def evaluate(pred: str | Path, truth: str | Path, *, pred_vectors: str | Path | None = None,
             classes: tuple[dict, ...] = DEFAULT_CLASSES, resolution: float | None = None,
             snap_m: float = 4.0, window: int = 2048, area: Window | None = None) -> dict[str, dict[str, float]]:
    """Per class: pixel IoU/precision/recall/F1; buildings (polygon classes): the SpaceNet object metric when
    polygons are given; roads: APLS (see :func:`geoseg.metrics.apls`). ``area`` limits scoring to a window."""
    skipped = set(unlabelled_classes(truth, classes))
    grid = grid_of(pred, truth, resolution)
    p_src, t_src = label_source(pred, grid, classes, "prediction"), label_source(truth, grid, classes, "truth")
    counts = pixel_counts(p_src, t_src, grid, len(classes), window, area)
    out: dict[str, dict[str, float]] = {}
    vectors = pred_vectors or (None if is_raster(pred) else pred)
    v_src = label_source(vectors, grid, classes, "predicted vectors") if vectors and vectors != pred else p_src
    aoi = grid.window(area).footprint() if area is not None else None
    for k in range(1, len(classes)):
        name = classes[k]["name"]
        if name in skipped:
            continue
        out[name] = {f"pixel_{m}": v for m, v in scores_from_counts(*counts[k]).items()}
        out[name].update({f"pixel_{m}": int(v) for m, v in zip(("tp", "fp", "fn"), counts[k])})  # for pooling
        if "road" in name:
            if area is None:
                pm, tm, factor = road_masks(p_src, t_src, grid, k)
                px = abs(grid.transform.a) * factor
                out[name].update(apls(pm, tm, snap_px=max(2.0, snap_m / px)))
            if vectors and t_src.is_vector:
                out[name].update(centerline_scores(vectors, truth, f"{name}_centerlines", grid, aoi))
        elif vectors and t_src.is_vector:
            found, want = v_src.geometries(k, aoi), t_src.geometries(k, aoi)
            if aoi is not None:
                want = shapely.intersection(want, aoi)
                want = want[shapely.area(want) > 0]
            out[name].update({f"object_{m}": v for m, v in object_scores(found, want).items()})
    return out


def centerline_scores(pred: str | Path, truth: str | Path, layer: str, grid: Grid, aoi: object = None,
                      tolerances: tuple[float, ...] = (1.0, 2.0)) -> dict[str, float]:
    """Completeness/correctness/F1 of predicted centerlines within 1 and 2 m of the true ones, when both files
    have the layer: clipped to ``aoi`` on the scoring grid, measured in metres (a geographic CRS goes to UTM)."""
    import geopandas as gpd
    import pyogrio

    if any(layer not in pyogrio.list_layers(p)[:, 0] for p in (pred, truth)):
        return {}
    want, found = (gpd.read_file(p, layer=layer).to_crs(grid.crs).geometry for p in (truth, pred))
    if aoi is not None:
        want, found = want.intersection(aoi), found.intersection(aoi)
    metric = want.estimate_utm_crs() if want.crs.is_geographic and len(want) else want.crs
    want, found = want.to_crs(metric).values, found.to_crs(metric).values
    out = {}
    for tol in tolerances:
        out.update({f"centerline_{k}_{tol:g}m": v for k, v in line_scores(found, want, tol).items()})
    return out


def seam_disagreement(scene_path: str | Path, bundle: str | None = None, tile: int | None = None,
                      halo: int | None = None, device: str = "cpu", batch_size: int = 1) -> dict[str, float]:
    """Seam QA: how much neighbouring tiles of the global grid disagree where their inputs overlap.

    Every tile is predicted on its own (as ``infer`` does); for each pair of horizontally or vertically
    adjacent tiles, the ``2 * halo`` wide strip both tiles see is compared: the fraction of pixels whose class
    (argmax) differs and the largest probability difference. ``infer`` keeps only each tile's core, so a low
    disagreement means the halo gives tiles enough context and the stitched raster has no visible seams.
    Costs one inference pass over the scene; keeps one row of tile strips in memory.
    """
    from geoseg.tiling import TileSpec
    from geoseg.models.bundle import read_meta, resolve_bundle
    from geoseg.predict import get_predictor
    from geoseg.scene import normalise, open_scene, read_block

    info = open_scene(scene_path)
    path = str(resolve_bundle(bundle).resolve())
    meta = read_meta(path)
    spec = TileSpec(tile or meta.tile, meta.halo if halo is None else halo, meta.stride)
    pred = get_predictor(path, device)
    t, h, core, k = spec.tile, spec.halo, spec.core, len(meta.classes)
    rows, cols = -(-info.height // core), -(-info.width // core)
    differ = total = 0
    max_dp = 0.0
    above: list[np.ndarray | None] = [None] * cols
    for i in range(rows):
        left = None
        for j in range(cols):
            r0, c0 = i * core - h, j * core - h
            data, valid = read_block(info, meta.band_indexes, Window(c0, r0, t, t))
            x = normalise(data, valid, meta.scale_for(data.dtype), meta.mean, meta.std)
            p = pred.predict(x[None], batch_size)[0, :k]
            for prev, mine, ok in ((left, p[:, :, :2 * h], valid[:, :2 * h]),
                                   (above[j], p[:, :2 * h, :], valid[:2 * h, :])):
                if prev is None or h == 0:
                    continue
                # only pixels inside the scene count (the reflected padding is not the scene's)
                ok = ok & _inside(r0, c0, info.height, info.width, ok.shape)
                differ += int(((prev.argmax(0) != mine.argmax(0)) & ok).sum())
                total += int(ok.sum())
                if ok.any():
                    max_dp = max(max_dp, float(np.abs(prev - mine)[:, ok].max()))
            left = p[:, :, t - 2 * h:]
            above[j] = p[:, t - 2 * h:, :]
    return {"seam_disagreement": differ / total if total else 0.0, "seam_max_prob_diff": max_dp,
            "seam_pixels_compared": total, "tile": t, "halo": h}


def _inside(r0: int, c0: int, height: int, width: int, shape: tuple[int, ...]) -> np.ndarray:
    rr = np.arange(r0, r0 + shape[0])[:, None]
    cc = np.arange(c0, c0 + shape[1])[None, :]
    return (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
