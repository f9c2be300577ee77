"""Metrics the field uses: pixel IoU per class and the SpaceNet object F1 (one-to-one at IoU >= 0.5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

MATCH_IOU = 0.5  # SpaceNet's object match: one prediction to one truth at IoU >= this


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


def match_objects(pred: np.ndarray, truth: np.ndarray, threshold: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """SpaceNet matching: greedy one-to-one pairs (pred index, truth index, IoU) with IoU >= ``threshold``."""
    pred, truth = np.asarray(pred, object), np.asarray(truth, object)
    pairs: list[tuple[int, int, float]] = []
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
                pairs.append((int(pi[k]), int(ti[k]), float(iou[k])))
    return pairs


def object_scores(pred: np.ndarray, truth: np.ndarray, threshold: float = MATCH_IOU) -> dict[str, float]:
    """SpaceNet building metric: greedy one-to-one matching of polygons by IoU >= ``threshold``."""
    matched = len(match_objects(pred, truth, threshold))
    precision = matched / len(pred) if len(pred) else 0.0
    recall = matched / len(truth) if len(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched,
            "predicted": len(pred), "truth": len(truth)}


def skeleton_graph(mask: np.ndarray) -> tuple[np.ndarray, Any]:
    """Centreline graph of a road mask: skeleton pixels (rows, cols) and their 8-connected adjacency with
    edge lengths 1 or sqrt(2) pixels (scikit-image skeletonize, a scipy sparse graph)."""
    from scipy import sparse
    from skimage.morphology import skeletonize

    skel = skeletonize(mask.astype(bool))
    rc = np.argwhere(skel)
    index = np.full(skel.shape, -1, np.int64)
    index[rc[:, 0], rc[:, 1]] = np.arange(len(rc))
    rows, cols, lengths = [], [], []
    h, w = skel.shape
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each undirected edge once
        r2, c2 = rc[:, 0] + dr, rc[:, 1] + dc
        ok = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        nb = np.full(len(rc), -1)
        nb[ok] = index[r2[ok], c2[ok]]
        keep = nb >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(nb[keep])
        lengths.append(np.full(keep.sum(), np.hypot(dr, dc)))
    r, c, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(lengths)
    graph = sparse.coo_matrix((d, (r, c)), shape=(len(rc), len(rc))).tocsr()
    return rc, graph + graph.T


def _path_score(a: tuple[np.ndarray, Any], b: tuple[np.ndarray, Any], snap_px: float, sources: int,
                rng: np.random.Generator) -> float:
    """One direction of APLS: paths between control nodes of graph ``a`` compared with the same trips in ``b``."""
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import cKDTree

    rc_a, g_a = a
    rc_b, g_b = b
    if len(rc_a) == 0:
        return 1.0 if len(rc_b) == 0 else 0.0
    if len(rc_b) == 0:
        return 0.0
    degree = np.diff(g_a.indptr)
    control = np.flatnonzero(degree != 2)  # junctions and ends
    if len(control) < 2:
        control = np.arange(len(rc_a))
    src = rng.choice(control, size=min(sources, len(control)), replace=False)
    d_a = dijkstra(g_a, indices=src)[:, control]
    dist, snapped = cKDTree(rc_b).query(rc_a[np.concatenate([src, control])])
    snapped[dist > snap_px] = -1
    s_b, c_b = snapped[:len(src)], snapped[len(src):]
    d_b = np.full(d_a.shape, np.inf)
    ok = s_b >= 0
    if ok.any():
        d_b[ok] = dijkstra(g_b, indices=s_b[ok])[:, np.where(c_b >= 0, c_b, 0)]
    d_b[:, c_b < 0] = np.inf
    pairs = np.isfinite(d_a) & (d_a > snap_px)  # trips that exist in ``a`` and are longer than the snap radius
    if not pairs.any():
        return 1.0
    diff = np.minimum(1.0, np.abs(d_a[pairs] - d_b[pairs]) / d_a[pairs])  # inf (no path in b) -> 1
    return float(1.0 - diff.mean())


def apls(pred_mask: np.ndarray, truth_mask: np.ndarray, snap_px: float = 8.0, sources: int = 30,
         seed: int = 0) -> dict[str, float]:
    """A documented simplification of APLS (Van Etten et al. 2018, SpaceNet 3) on skeletons of road masks.

    Both masks are skeletonised into pixel graphs. From up to ``sources`` control nodes (junctions and ends) of
    the truth graph, shortest paths to every other control node are measured; the same trips are measured in
    the predicted graph after snapping both ends to its nearest skeleton pixel within ``snap_px``. A trip
    scores ``1 - min(1, |L_truth - L_pred| / L_truth)`` (a missing path or snap scores 0). The mean over trips
    is computed truth->prediction and prediction->truth; APLS is their harmonic mean. Unlike the SpaceNet code
    there is no node injection every 50 m nor graph simplification: control nodes are skeleton junctions/ends.
    """
    rng = np.random.default_rng(seed)
    truth_g, pred_g = skeleton_graph(truth_mask), skeleton_graph(pred_mask)
    t2p = _path_score(truth_g, pred_g, snap_px, sources, rng)
    p2t = _path_score(pred_g, truth_g, snap_px, sources, rng)
    score = 2 * t2p * p2t / (t2p + p2t) if t2p + p2t else 0.0
    return {"apls": score, "apls_truth_to_pred": t2p, "apls_pred_to_truth": p2t,
            "truth_nodes": len(truth_g[0]), "pred_nodes": len(pred_g[0])}


def line_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """Road centerlines (Wiedemann's completeness and correctness): the share of the true centerline length that
    lies within ``tolerance`` (map units, metres) of a predicted line, and the share of the predicted length
    within ``tolerance`` of a true one; their harmonic mean is the F1."""
    found, want = shapely.union_all(np.asarray(pred, object)), shapely.union_all(np.asarray(truth, object))
    if want.is_empty or found.is_empty:
        return {"completeness": 0.0, "correctness": 0.0, "f1": 0.0}
    completeness = shapely.intersection(want, shapely.buffer(found, tolerance)).length / want.length
    correctness = shapely.intersection(found, shapely.buffer(want, tolerance)).length / found.length
    f1 = 2 * completeness * correctness / (completeness + correctness) if completeness + correctness else 0.0
    return {"completeness": round(completeness, 4), "correctness": round(correctness, 4), "f1": round(f1, 4)}
