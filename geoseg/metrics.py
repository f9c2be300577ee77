"""Metrics the field uses: pixel IoU per class and the SpaceNet object F1 (one-to-one at IoU >= 0.5)."""

from __future__ import annotations

import numpy as np
import shapely


def pixel_scores(pred: np.ndarray, truth: np.ndarray, class_id: int, valid: np.ndarray | None = None
                 ) -> dict[str, float]:
    """IoU, precision, recall and F1 of one class between two label rasters (optionally within ``valid``)."""
    p, t = pred == class_id, truth == class_id
    if valid is not None:
        p, t = p & valid, t & valid
    return scores_from_counts(*confusion(p, t))


def confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[tp, fp, fn]`` pixel counts of two boolean masks (summable over windows)."""
    return np.array([np.count_nonzero(pred & truth), np.count_nonzero(pred & ~truth),
                     np.count_nonzero(~pred & truth)], float)


def scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """IoU, precision, recall and F1 from pixel counts."""
    return {"iou": tp / max(tp + fp + fn, 1.0), "precision": tp / max(tp + fp, 1.0),
            "recall": tp / max(tp + fn, 1.0), "f1": 2 * tp / max(2 * tp + fp + fn, 1.0)}


def object_scores(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """SpaceNet building metric: greedy one-to-one matching of polygons by IoU >= ``threshold``."""
    pred, truth = np.asarray(pred, object), np.asarray(truth, object)
    matched = 0
    if len(pred) and len(truth):
        pi, ti = shapely.STRtree(truth).query(pred, predicate="intersects")
        inter = shapely.area(shapely.intersection(pred[pi], truth[ti]))
        iou = inter / (shapely.area(pred[pi]) + shapely.area(truth[ti]) - inter)
        used_p, used_t = set(), set()
        for k in np.argsort(-iou, kind="stable"):
            if iou[k] < threshold:
                break
            if pi[k] not in used_p and ti[k] not in used_t:
                used_p.add(pi[k])
                used_t.add(ti[k])
                matched += 1
    precision = matched / len(pred) if len(pred) else 0.0
    recall = matched / len(truth) if len(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched,
            "predicted": len(pred), "truth": len(truth)}
