"""``geoseg bench footprints``: how well ``--regularize`` fits buildings on synth scenes with exact truth.

Per scene (made with ``geoseg.synth`` into the folder when missing, with its class raster), the truth buildings are
matched to several predictions (one-to-one at IoU >= 0.5, :func:`geoseg.metrics.match_objects`):

- ``single_*``: every truth building rasterised alone (pixel-centre rule) and traced: the regulariser alone;
- ``raster_*``: the truth's class raster through the vectoriser (instance split included);
- ``model_*``: the bundled model's class and probability rasters (:func:`geoseg.infer.infer`) through the
  vectoriser;

each as ``raw`` (traced), ``plain`` (the default outline), ``reg`` (``--regularize``) and ``br``
(``buildingregulariser`` on the raw outlines, default settings) where that package is installed: it is a reference
to compare with, not a dependency, and the report says when it was skipped. Scored: object F1, mean IoU of matched
buildings, and the share of matched buildings whose truth is a rectangle that come out with every corner within
2° of 90° and no wall shorter than 1 m (so a pixel staircase does not count), and with exactly those 4 corners.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.metrics import match_objects
from geoseg.pipeline import DEFAULT_POST, ClassPost

TOL_DEG = 2.0     # a corner is right-angled within this many degrees of 90
MIN_WALL_M = 1.0  # ... and no wall is shorter (a pixel staircase has right angles too)
REFERENCE = "buildingregulariser"
# what the aggregate pools per prediction, and what each scene's row shows
_POOLED = ("matched", "pred", "truth", "iou_sum", "rect_matched", "rect_right_n", "rect_right4_n")
_ROW = ("f1", "mean_iou", "rect_right")

log = logging.getLogger("geoseg")


@dataclasses.dataclass(frozen=True)
class FootprintRun:
    """What one ``bench footprints`` run scores: scenes, predictions and the regulariser's limits."""

    folder: Path
    seeds: tuple[int, ...]
    look: str = "temperate"
    size: int = 1024
    model: bool = False                 # also the bundled model's predictions
    reference: bool = True              # also buildingregulariser, when installed
    tta: Literal[1, 4, 8] = 1           # views for the model's predictions
    regularize_m: float | None = None   # default: the building class's
    limits: dict[str, float] = dataclasses.field(default_factory=dict)  # geoseg.vectorize.regularize constants
    only: tuple[str, ...] = ()          # prefixes of the predictions to score (default: all)

    def wanted(self, name: str) -> bool:
        return not self.only or any(name.startswith(o) for o in self.only)


def turns_ok(poly: shapely.Polygon, tol: float = TOL_DEG, min_wall: float = MIN_WALL_M) -> bool:
    """Every corner within ``tol`` degrees of 90° and no wall shorter than ``min_wall``."""
    poly = shapely.simplify(poly, 0.0)
    for ring in [poly.exterior, *poly.interiors]:
        xy = np.asarray(ring.coords)[:-1]
        d = np.roll(xy, -1, 0) - xy
        if (np.hypot(d[:, 0], d[:, 1]) < min_wall).any():
            return False
        a = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
        t = (np.roll(a, -1) - a + 180) % 360 - 180
        if not (np.abs(np.abs(t) - 90) <= tol).all():
            return False
    return True


def n_corners(g: shapely.Polygon) -> int:
    g = shapely.simplify(g, 0.0)
    return sum(len(r.coords) - 1 for r in [g.exterior, *g.interiors])


def is_rect(g: shapely.Polygon) -> bool:
    return len(shapely.simplify(g, 0.0).exterior.coords) == 5 and turns_ok(g, 0.5, 0.0)


def _share(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4) if flags else 0.0


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Object F1, matched mean IoU and the right-angle shares of one prediction against the truth."""
    pairs = match_objects(pred, truth)
    ious = [p[2] for p in pairs]
    n_p, n_t, m = len(pred), len(truth), len(pairs)
    prec, rec = m / max(n_p, 1), m / max(n_t, 1)
    rect = [p for p in pairs if is_rect(truth[p[1]])]
    return {"matched": m, "pred": n_p, "truth": n_t, "f1": round(2 * prec * rec / max(prec + rec, 1e-9), 4),
            "mean_iou": round(float(np.mean(ious)) if ious else 0.0, 4), "rect_matched": len(rect),
            "rect_right": _share([turns_ok(pred[i]) for i, _, _ in rect]),
            "rect_right4": _share([turns_ok(pred[i]) and n_corners(pred[i]) == 4 for i, _, _ in rect]),
            "all_right": _share([turns_ok(pred[i]) and n_corners(pred[i]) <= n_corners(truth[j])
                                 for i, j, _ in pairs]),
            "iou_sum": float(np.sum(ious))}


def to_map(geoms: np.ndarray, t: Affine) -> np.ndarray:
    from geoseg.grid import map_points

    return shapely.transform(geoms, lambda xy: map_points(t, xy))


def per_building(truth: np.ndarray, t: Affine, methods: dict[str, Callable[[np.ndarray], np.ndarray]]
                 ) -> dict[str, np.ndarray]:
    """Each truth building rasterised alone (pixel-centre rule), traced, then each method applied."""
    raw = []
    for g in to_map(truth, ~t):
        x0, y0, x1, y1 = g.bounds
        c0, r0 = int(np.floor(x0)) - 2, int(np.floor(y0)) - 2
        w, h = int(np.ceil(x1)) - c0 + 2, int(np.ceil(y1)) - r0 + 2
        at = Affine.translation(c0, r0)
        m = rasterio.features.rasterize([(g, 1)], out_shape=(h, w), transform=at, dtype="uint8")
        polys = [shapely.geometry.shape(s) for s, _ in rasterio.features.shapes(m, mask=m > 0, connectivity=4,
                                                                               transform=at)]
        raw.append(shapely.simplify(max(polys, key=lambda p: p.area) if polys else shapely.Polygon(), 0.0))
    traced = np.array(raw, dtype=object)
    out = {"raw": traced, **{k: fn(traced) for k, fn in methods.items()}}
    return {k: to_map(np.asarray(v, dtype=object), t) for k, v in out.items()}


def px_methods(tol_px: float, simp_px: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from geoseg.vectorize.polygons import simplify_polygons
    from geoseg.vectorize.regularize import regularize_all

    return {"plain": lambda raw: simplify_polygons(raw, simp_px),
            "reg": lambda raw: regularize_all(raw, tol_px, simplify_polygons(raw, simp_px))}


def reference_status() -> dict[str, Any]:
    """Whether buildingregulariser can be compared with here, and which release."""
    if importlib.util.find_spec(REFERENCE) is None:
        return {"available": False, "skipped": f"not installed (pip install {REFERENCE}): its column is left out"}
    return {"available": True, "version": importlib.metadata.version(REFERENCE), "settings": "default"}


def reference_outlines(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """buildingregulariser's outlines for ``geoms`` (map coordinates), default settings, one core."""
    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    gdf = gpd.GeoDataFrame(geometry=gpd.GeoSeries(geoms, crs=crs))
    with warnings.catch_warnings():  # its own use of APIs that pandas/geopandas deprecate: not ours to report
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return np.asarray(regularize_geodataframe(gdf, num_cores=1).geometry.values)


def vector_layers(classes: np.ndarray, probs: np.ndarray | None, t: Affine, crs: str, post: ClassPost) -> np.ndarray:
    """The building outlines the vectoriser makes of a class raster (and its probabilities, when given)."""
    from geoseg.vectorize.drive import collect, make_spec

    def read(win: Window) -> tuple[np.ndarray, np.ndarray, dict]:
        rows, cols = win.toslices()
        c = classes[rows, cols]
        if probs is None:
            p = np.stack([np.where(c == k, 0.9, 0.05) for k in range(3)]).astype(np.float32)
        else:
            p = probs[:3, rows, cols]
        return c, p, {}

    vs = make_spec(classes.shape, 512, t, crs, [(1, "building", "buildings", post),
                                                (2, "road", "roads", DEFAULT_POST["road"])])
    return np.asarray(collect(read, vs)["buildings"].geometry.values)


@contextlib.contextmanager
def regularizer_limits(limits: dict[str, float]) -> Iterator[None]:
    """The regulariser's acceptance limits (``MAX_MISFIT_PX``...) set for the body's duration (trade-off
    studies), then restored."""
    import geoseg.vectorize.regularize as reg

    before = {k: getattr(reg, k) for k in limits}
    for k, v in limits.items():
        setattr(reg, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(reg, k, v)


def scene_files(run: FootprintRun, seed: int) -> tuple[Path, Path, Path]:
    """The scene, its class raster and its truth for ``seed``, made once in the run's folder."""
    from geoseg.synth import SynthSpec, write_scene

    stem = run.folder / f"s{seed}_{run.look}"
    scene, labels, truth = (Path(f"{stem}{x}") for x in (".tif", "_labels.tif", "_truth.gpkg"))
    if not scene.exists():
        write_scene(SynthSpec(run.size, run.size, seed=seed, look=run.look), scene, truth, labels_out=labels)
    return scene, labels, truth


def model_rasters(run: FootprintRun, scene: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled model's class and probability rasters for ``scene`` (``run.tta`` views), made once beside it.
    Small bench scenes only: both are read whole."""
    from geoseg.infer import infer
    from geoseg.pipeline import InferConfig

    stem = scene.with_suffix("")
    cls_path, prob_path = Path(f"{stem}_pred{run.tta}.tif"), Path(f"{stem}_prob{run.tta}.tif")
    if not prob_path.exists():
        infer(scene, None, InferConfig(tta=run.tta), raster_out=cls_path, prob_out=prob_path, overwrite=True)
    with rasterio.open(cls_path) as src:
        classes = src.read(1)
    with rasterio.open(prob_path) as src:
        probs = src.read()
    return classes, probs


def predictions(run: FootprintRun, seed: int, base: ClassPost, reference: bool) -> tuple[dict[str, np.ndarray],
                                                                                          np.ndarray]:
    """Every prediction of one scene, by name, and the truth buildings."""
    import geopandas as gpd

    scene, labels, truth_path = scene_files(run, seed)
    truth_gdf = gpd.read_file(truth_path, layer="buildings")
    truth = np.asarray(truth_gdf.geometry.values)
    with rasterio.open(labels) as src:  # a small bench scene: read whole
        classes, t, crs = src.read(1), src.transform, src.crs.to_wkt()
    m = abs(t.a)
    posts = {"plain": base, "reg": dataclasses.replace(base, regularize=True),
             "raw": dataclasses.replace(base, simplify_m=0.0)}
    res: dict[str, np.ndarray] = {}
    if run.wanted("single") or reference:
        res.update({f"single_{k}": v for k, v in per_building(truth, t, px_methods(base.regularize_m / m,
                                                                                   base.simplify_m / m)).items()})
    if run.wanted("raster") or reference:
        res.update({f"raster_{k}": vector_layers(classes, None, t, crs, post) for k, post in posts.items()})
    if run.model:
        pc, pp = model_rasters(run, scene)
        res.update({f"model_{k}": vector_layers(pc, pp, t, crs, post) for k, post in posts.items()
                    if run.wanted(f"model_{k}") or (k == "raw" and reference)})
    if reference:
        for source in ("single", "raster", "model"):
            if f"{source}_raw" in res:
                res[f"{source}_br"] = reference_outlines(res[f"{source}_raw"], truth_gdf.crs)
    return res, truth


def _pooled(totals: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for k, tot in totals.items():
        p, r = tot["matched"] / max(tot["pred"], 1), tot["matched"] / max(tot["truth"], 1)
        n = max(tot["rect_matched"], 1)
        out[k] = {"f1": round(2 * p * r / max(p + r, 1e-9), 4),
                  "mean_iou": round(tot["iou_sum"] / max(tot["matched"], 1), 4),
                  "rect_right": round(tot["rect_right_n"] / n, 4), "rect_right4": round(tot["rect_right4_n"] / n, 4),
                  "rect_matched": int(tot["rect_matched"]), "matched": int(tot["matched"]),
                  "pred": int(tot["pred"]), "truth": int(tot["truth"])}
    return out


def bench_footprints(run: FootprintRun) -> dict[str, Any]:
    """Per scene each prediction's F1, mean IoU and right-angled share; pooled over the scenes in
    ``aggregate``. ``buildingregulariser`` says whether that reference was compared with (or why not)."""
    run.folder.mkdir(parents=True, exist_ok=True)
    status = reference_status()
    reference = run.reference and status["available"]
    if not run.reference:
        status = {**status, "skipped": "--no-reference"}
    base = DEFAULT_POST["building"]
    if run.regularize_m:
        base = dataclasses.replace(base, regularize_m=run.regularize_m)
    totals: dict[str, dict[str, float]] = {}
    rows = []
    with regularizer_limits(run.limits):
        for seed in run.seeds:
            res, truth = predictions(run, seed, base, reference)
            row: dict[str, Any] = {"seed": seed}
            for k, v in res.items():
                if not run.wanted(k):
                    continue
                s = score(v, truth)
                row[k] = {kk: s[kk] for kk in _ROW}
                tot = totals.setdefault(k, dict.fromkeys(_POOLED, 0.0))
                for key in ("matched", "pred", "truth", "iou_sum", "rect_matched"):
                    tot[key] += s[key]
                tot["rect_right_n"] += s["rect_right"] * s["rect_matched"]
                tot["rect_right4_n"] += s["rect_right4"] * s["rect_matched"]
            log.info("footprints: seed %d scored (%d predictions)", seed, len(row) - 1)
            rows.append(row)
    return {"bench": "footprints", "look": run.look, "size": run.size, "seeds": list(run.seeds),
            "tta": run.tta if run.model else None, "limits": dict(run.limits),
            "regularize_m": base.regularize_m, REFERENCE: status, "scenes": rows, "aggregate": _pooled(totals)}
