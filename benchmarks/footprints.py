"""Footprint fit of ``--regularize`` on geoseg synth scenes with exact truth (the README's Benchmarks figures).

    python benchmarks/footprints.py DIR SEED... [--look temperate] [--model] [--br]

Per scene (made with ``geoseg synth --labels`` into DIR when missing), buildings are matched to the truth
(one-to-one at IoU >= 0.5, geoseg.metrics) for several predictions:

- ``single_*``: every truth building rasterised alone (pixel-centre rule) and traced: the regulariser alone;
- ``raster_*``: the truth's class raster through the vectoriser (instance split included);
- ``model_*``: the bundled model's class and probability rasters (``geoseg infer``) through the vectoriser;

each as ``raw`` (traced), ``plain`` (the default outline), ``reg`` (``--regularize``) and, with ``--br``,
``br`` (``buildingregulariser`` from PyPI on the raw outlines, default settings; ``pip install
buildingregulariser`` first, it is not a dependency). Printed: object F1, mean IoU of matched buildings, and
the share of matched buildings whose truth is a rectangle that come out with every corner within 2° of 90°
and no wall shorter than 1 m (so a pixel staircase does not count), and the share with exactly those 4 corners.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine

from geoseg.metrics import match_objects
from geoseg.pipeline import DEFAULT_POST, ClassPost
from geoseg.vectorize.drive import collect, make_spec
from geoseg.vectorize.polygons import simplify_polygons
from geoseg.vectorize.regularize import regularize_all

GEOSEG = [sys.executable, "-m", "geoseg"]
TOL_DEG = 2.0
MIN_WALL_M = 1.0


def turns_ok(poly, tol=TOL_DEG, min_wall=MIN_WALL_M) -> bool:
    """Every corner within ``tol`` degrees of 90° and no wall shorter than ``min_wall`` (a pixel staircase has
    right angles too, but is not a squared footprint)."""
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


def n_corners(g) -> int:
    g = shapely.simplify(g, 0.0)
    return sum(len(r.coords) - 1 for r in [g.exterior, *g.interiors])


def is_rect(g) -> bool:
    return len(shapely.simplify(g, 0.0).exterior.coords) == 5 and turns_ok(g, 0.5, 0.0)


def score(pred: np.ndarray, truth: np.ndarray) -> dict:
    pairs = match_objects(pred, truth)
    ious = [p[2] for p in pairs]
    n_p, n_t, m = len(pred), len(truth), len(pairs)
    prec, rec = m / max(n_p, 1), m / max(n_t, 1)
    rect_pairs = [p for p in pairs if is_rect(truth[p[1]])]
    return {"matched": m, "pred": n_p, "truth": n_t, "f1": round(2 * prec * rec / max(prec + rec, 1e-9), 4),
            "mean_iou": round(float(np.mean(ious)) if ious else 0.0, 4),
            "rect_matched": len(rect_pairs),
            "rect_right": round(float(np.mean([turns_ok(pred[p[0]]) for p in rect_pairs])) if rect_pairs else 0, 4),
            "rect_right4": round(float(np.mean([turns_ok(pred[p[0]]) and n_corners(pred[p[0]]) == 4
                                                for p in rect_pairs])) if rect_pairs else 0, 4),
            "all_right": round(float(np.mean([turns_ok(pred[p[0]]) and n_corners(pred[p[0]]) <= n_corners(truth[p[1]])
                                              for p in pairs])) if pairs else 0, 4),
            "iou_sum": float(np.sum(ious))}


def to_map(geoms, t: Affine):
    a, b, c, d, e, f = t[:6]
    return shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                 d * xy[:, 0] + e * xy[:, 1] + f]))


def per_building(truth: np.ndarray, t: Affine, methods: dict) -> dict:
    """Each truth building rasterised alone (pixel centre rule), traced, then each method applied."""
    inv = ~t
    px = to_map(truth, inv)
    out = {k: [] for k in ["raw", *methods]}
    for g in px:
        x0, y0, x1, y1 = g.bounds
        c0, r0 = int(np.floor(x0)) - 2, int(np.floor(y0)) - 2
        w, h = int(np.ceil(x1)) - c0 + 2, int(np.ceil(y1)) - r0 + 2
        m = rasterio.features.rasterize([(g, 1)], out_shape=(h, w), transform=Affine.translation(c0, r0),
                                        dtype="uint8")
        polys = [shapely.geometry.shape(s) for s, v in rasterio.features.shapes(
            m, mask=m > 0, connectivity=4, transform=Affine.translation(c0, r0))]
        raw = max(polys, key=lambda p: p.area) if polys else shapely.Polygon()
        out["raw"].append(shapely.simplify(raw, 0.0))
    raw = np.array(out["raw"], dtype=object)
    for k, fn in methods.items():
        out[k] = fn(raw)
    return {k: to_map(np.asarray(v, dtype=object), t) for k, v in out.items()}


def px_methods(tol_px: float, simp_px: float) -> dict:
    return {"plain": lambda raw: simplify_polygons(raw, simp_px),
            "reg": lambda raw: regularize_all(raw, tol_px, simplify_polygons(raw, simp_px))}


def br(geoms: np.ndarray, crs) -> np.ndarray:
    from buildingregulariser import regularize_geodataframe
    gdf = gpd.GeoDataFrame(geometry=gpd.GeoSeries(geoms, crs=crs))
    out = regularize_geodataframe(gdf, num_cores=1)
    return np.asarray(out.geometry.values)


def vector_layers(classes: np.ndarray, probs: np.ndarray | None, t: Affine, crs: str, post: ClassPost) -> np.ndarray:
    def read(r0, c0, h, w):
        c = classes[r0:r0 + h, c0:c0 + w]
        if probs is None:
            p = np.stack([np.where(c == k, 0.9, 0.05) for k in range(3)]).astype(np.float32)
        else:
            p = probs[:3, r0:r0 + h, c0:c0 + w]
        return c, p, {}
    vs = make_spec(classes.shape, 512, t, crs, [(1, "building", "buildings", post),
                                                (2, "road", "roads", DEFAULT_POST["road"])])
    return np.asarray(collect(read, vs)["buildings"].geometry.values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("seeds", type=int, nargs="+")
    ap.add_argument("--look", default="temperate")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", action="store_true", help="also the bundled model's predictions")
    ap.add_argument("--br", action="store_true", help="also buildingregulariser (pip install it first)")
    ap.add_argument("--tta", default="1", help="infer --tta for the model's predictions")
    ap.add_argument("--regularize-m", type=float, help="default: the building class's")
    ap.add_argument("--misfit", type=float, help="regularize.MAX_MISFIT_PX (trade-off studies)")
    ap.add_argument("--lost", type=float, help="regularize.MAX_LOST_PX")
    ap.add_argument("--hausdorff", type=float, help="regularize.HAUSDORFF_TOLERANCES")
    ap.add_argument("--only", default="", help="comma-separated prefixes of the predictions to score")
    args = ap.parse_args()
    import geoseg.vectorize.regularize as reg
    for key, value in (("MAX_MISFIT_PX", args.misfit), ("MAX_LOST_PX", args.lost),
                       ("HAUSDORFF_TOLERANCES", args.hausdorff)):
        if value is not None:
            setattr(reg, key, value)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    base = DEFAULT_POST["building"]
    if args.regularize_m:
        base = dataclasses.replace(base, regularize_m=args.regularize_m)
    posts = {"plain": base, "reg": dataclasses.replace(base, regularize=True),
             "raw": dataclasses.replace(base, simplify_m=0.0)}

    def wanted(name: str) -> bool:
        return not args.only or any(name.startswith(o) for o in args.only.split(","))

    totals: dict[str, dict] = {}
    for seed in args.seeds:
        stem = d / f"s{seed}_{args.look}"
        scene, labels, truth_path = (Path(f"{stem}{x}") for x in (".tif", "_labels.tif", "_truth.gpkg"))
        if not scene.exists():
            subprocess.run(GEOSEG + ["synth", str(scene), "--size", str(args.size), "--seed", str(seed), "--look",
                                     args.look, "--labels", str(labels)], check=True)
        truth_gdf = gpd.read_file(truth_path, layer="buildings")
        truth = np.asarray(truth_gdf.geometry.values)
        with rasterio.open(labels) as src:
            classes, t, crs = src.read(1), src.transform, src.crs.to_wkt()
        m = abs(t.a)
        res: dict[str, np.ndarray] = {}
        if wanted("single") or args.br:
            pb = per_building(truth, t, px_methods(base.regularize_m / m, base.simplify_m / m))
            res.update({f"single_{k}": v for k, v in pb.items()})
            if args.br:
                res["single_br"] = br(pb["raw"], truth_gdf.crs)
        if wanted("raster") or args.br:
            res.update({f"raster_{k}": vector_layers(classes, None, t, crs, post) for k, post in posts.items()})
            if args.br:
                res["raster_br"] = br(res["raster_raw"], truth_gdf.crs)
        if args.model:
            cls_path, prob_path = Path(f"{stem}_pred{args.tta}.tif"), Path(f"{stem}_prob{args.tta}.tif")
            if not prob_path.exists():
                subprocess.run(GEOSEG + ["infer", str(scene), "--raster-out", str(cls_path), "--prob-out",
                                         str(prob_path), "-q", "--tta", args.tta], check=True)
            with rasterio.open(cls_path) as src:
                pc = src.read(1)
            with rasterio.open(prob_path) as src:
                pp = src.read()
            res.update({f"model_{k}": vector_layers(pc, pp, t, crs, post) for k, post in posts.items()
                        if wanted(f"model_{k}") or (k == "raw" and args.br)})
            if args.br:
                res["model_br"] = br(res["model_raw"], truth_gdf.crs)
        row: dict[str, object] = {"seed": seed}
        for k, v in res.items():
            if not wanted(k):
                continue
            s = score(v, truth)
            row[k] = {kk: s[kk] for kk in ("f1", "mean_iou", "rect_right")}
            tot = totals.setdefault(k, dict.fromkeys(("matched", "pred", "truth", "iou_sum", "rect_matched",
                                                      "rect_right_n", "rect_right4_n"), 0.0))
            for key in ("matched", "pred", "truth", "iou_sum", "rect_matched"):
                tot[key] += s[key]
            tot["rect_right_n"] += s["rect_right"] * s["rect_matched"]
            tot["rect_right4_n"] += s["rect_right4"] * s["rect_matched"]
        print(json.dumps(row), flush=True)
    print("AGGREGATE")
    for k, tot in totals.items():
        p, r = tot["matched"] / max(tot["pred"], 1), tot["matched"] / max(tot["truth"], 1)
        n = max(tot["rect_matched"], 1)
        print(f"{k:14s} F1 {2 * p * r / max(p + r, 1e-9):.4f}  "
              f"matched IoU {tot['iou_sum'] / max(tot['matched'], 1):.4f}"
              f"  rectangles right-angled {tot['rect_right_n'] / n:.4f} (4 corners {tot['rect_right4_n'] / n:.4f},"
              f" n={int(tot['rect_matched'])})")


if __name__ == "__main__":
    main()
