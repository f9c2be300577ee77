"""Score many scenes at once: a folder or a manifest of prediction/truth pairs -> one row per scene + the aggregate.

The aggregate pools the counts (pixel tp/fp/fn, matched/predicted/true objects) over every scene, so a large
scene weighs more than a small one, as one big scene would. When the truth names each building's ``kind`` (geoseg
synth does), the share of terraced houses that come out as their own polygon (matched one-to-one at IoU >= 0.5)
is reported too, with the mean IoU of matched buildings.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio

from geoseg.errors import ConfigError
from geoseg.evaluate import DEFAULT_CLASSES, evaluate, is_raster
from geoseg.metrics import match_objects, scores_from_counts

TRUTH_SUFFIX, PRED_SUFFIX, RASTER_SUFFIX = "_truth.gpkg", "_pred.gpkg", "_classes.tif"


@dataclass(frozen=True)
class Pair:
    """One scene to score: a name, its truth and its prediction (vectors and/or class raster)."""

    name: str
    truth: Path
    pred: Path | None = None
    raster: Path | None = None


def find_pairs(source: str | Path) -> list[Pair]:
    """Pairs from a folder (``X_truth.gpkg`` with ``X_pred.gpkg`` and/or ``X_classes.tif``) or a CSV manifest
    with columns ``truth`` and ``pred`` and/or ``raster`` (optional ``name``; paths relative to the manifest)."""
    source = Path(source)
    if source.is_dir():
        pairs = []
        for truth in sorted(source.glob(f"*{TRUTH_SUFFIX}")):
            stem = truth.name[: -len(TRUTH_SUFFIX)]
            pred, raster = source / f"{stem}{PRED_SUFFIX}", source / f"{stem}{RASTER_SUFFIX}"
            pairs.append(Pair(stem, truth, pred if pred.exists() else None, raster if raster.exists() else None))
        pairs = [p for p in pairs if p.pred or p.raster]
        if not pairs:
            raise ConfigError(f"{source}: no NAME{TRUTH_SUFFIX} with a NAME{PRED_SUFFIX} or NAME{RASTER_SUFFIX} "
                              "beside it; name the files so, or pass a CSV manifest (truth,pred,raster)")
        return pairs
    if not source.exists():
        raise ConfigError(f"{source}: no such folder or manifest; check the path")
    with open(source, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "truth" not in rows[0] or not ({"pred", "raster"} & set(rows[0])):
        raise ConfigError(f"{source}: a manifest needs a header with truth and pred and/or raster columns")

    def path(v: str | None) -> Path | None:
        return (source.parent / v) if v else None

    return [Pair(r.get("name") or Path(r["truth"]).stem, path(r["truth"]), path(r.get("pred")),  # type: ignore[arg-type]
                 path(r.get("raster"))) for r in rows]


def _terraces(pair: Pair) -> dict[str, float]:
    """Matched-building IoU and the terraced houses that are their own polygon (when the truth has ``kind``)."""
    if pair.pred is None or is_raster(pair.pred):
        return {}
    truth = pyogrio.read_dataframe(pair.truth, layer="buildings")
    pred = pyogrio.read_dataframe(pair.pred, layer="buildings").to_crs(truth.crs)
    pairs = match_objects(pred.geometry.values, truth.geometry.values)
    out = {"object_iou_sum": float(sum(iou for *_, iou in pairs)),
           "object_mean_iou": float(np.mean([iou for *_, iou in pairs])) if pairs else 0.0}
    if "kind" in truth:
        terrace = truth["kind"].to_numpy(str) == "terrace"
        hit = np.zeros(len(truth), bool)
        hit[[t for _, t, _ in pairs]] = True
        out.update(terraced=int(terrace.sum()), terraced_split=int((hit & terrace).sum()))
    return out


def score_one(pair: Pair, classes: tuple[dict, ...] = DEFAULT_CLASSES) -> dict[str, dict[str, float]]:
    """:func:`geoseg.evaluate.evaluate` on one pair, plus the terrace and matched-IoU figures for buildings."""
    main = pair.raster or pair.pred
    assert main is not None
    scores = evaluate(main, pair.truth, pred_vectors=pair.pred if pair.raster and pair.pred else None,
                      classes=classes)
    if "building" in scores:
        scores["building"].update(_terraces(pair))
    return scores


def aggregate(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Pooled scores over scenes: pixel metrics from summed counts, object metrics from summed matches."""
    out: dict[str, dict[str, float]] = {}
    for name in rows[0]:
        got = [r[name] for r in rows if name in r]
        agg = {f"pixel_{k}": v for k, v in scores_from_counts(
            *(sum(g.get(f"pixel_{c}", 0) for g in got) for c in ("tp", "fp", "fn"))).items()}
        if all("object_matched" in g for g in got):
            m, p, t = (sum(g[f"object_{k}"] for g in got) for k in ("matched", "predicted", "truth"))
            prec, rec = m / p if p else 0.0, m / t if t else 0.0
            agg.update(object_precision=prec, object_recall=rec,
                       object_f1=2 * prec * rec / (prec + rec) if prec + rec else 0.0)
            if all("object_iou_sum" in g for g in got):
                agg["object_mean_iou"] = sum(g["object_iou_sum"] for g in got) / m if m else 0.0
        if all("terraced" in g for g in got):
            n = sum(g["terraced"] for g in got)
            agg["terraced_split_rate"] = sum(g["terraced_split"] for g in got) / n if n else 0.0
        if got and all("apls" in g for g in got):
            agg["apls_mean"] = float(np.mean([g["apls"] for g in got]))
        out[name] = agg
    return out


def evaluate_many(source: str | Path, classes: tuple[dict, ...] = DEFAULT_CLASSES) -> dict:
    """``{"scenes": [{"name", <class>: scores}...], "aggregate": {<class>: pooled scores}}``."""
    pairs = find_pairs(source)
    rows = [score_one(p, classes) for p in pairs]
    return {"scenes": [{"name": p.name, **r} for p, r in zip(pairs, rows)], "aggregate": aggregate(rows)}
