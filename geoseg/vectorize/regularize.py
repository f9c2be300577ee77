"""Right-angle regularisation of building footprints, fitted to the pixels they were traced from.

Hand-written: shapely, GEOS and scikit-image simplify outlines but none squares them (``buildingregulariser``
does, but snaps Douglas-Peucker vertices rather than fitting the boundary, and brings a dependency tree).

For each candidate dominant direction (the minimum rotated rectangle's long side, and the length-weighted
mean of the outline's edge directions modulo 90°) the traced outline is turned to that frame and:

1. its Douglas-Peucker edges are snapped to the two axes and runs of edges on one axis merged;
2. runs shorter than the tolerance (steps that move the outline by less than it) are dropped, shortest first;
3. each remaining axis line is fitted by least squares to the raster boundary points nearest to it (ends
   trimmed, so rounded corners do not pull the walls in), twice, re-assigning points in between.

The candidate that overlaps the traced pixels best is kept only if it stays close to them (symmetric
difference and lost area per unit of perimeter, and the outer ring's Hausdorff distance; filled holes count as
area); otherwise the caller's plain outline is returned, so a shape that is not rectilinear (round, diagonal,
or a model's blob far from any right-angled shape) is never forced into one.
"""

from __future__ import annotations

import math

import numpy as np
import shapely

# Acceptance, in pixels of symmetric difference (and of area lost) per pixel of the squared outline's perimeter,
# and the outer ring's Hausdorff distance in tolerances (+ 1 px). A pixel outline of a straight wall strays from it
# by up to half a pixel; a model's outline also rounds corners and wobbles, which squaring takes back. Looser
# limits square more buildings whose pixels are far from any right-angled shape; tighter ones leave more of
# them as plain outlines (README, Benchmarks, has the trade measured).
MAX_MISFIT_PX = 1.0
MAX_LOST_PX = 0.5
HAUSDORFF_TOLERANCES = 3.0
LS_ROUNDS = 2
MAX_WALLS = 64  # more walls than this is not a building to square
MAX_POINTS = 20_000


def dominant_angle(poly: shapely.Polygon) -> float:
    """Angle (radians) of the long side of the minimum rotated rectangle."""
    xy = shapely.get_coordinates(shapely.oriented_envelope(poly))
    if len(xy) < 3:
        return 0.0
    e1, e2 = xy[1] - xy[0], xy[2] - xy[1]
    v = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    return math.atan2(v[1], v[0])


def edge_angle(poly: shapely.Polygon, tolerance: float) -> float:
    """Length-weighted mean direction (radians, modulo 90°) of the outline's Douglas-Peucker edges: walls vote by
    their length, so one long wall outweighs a rounded corner."""
    xy = shapely.get_coordinates(shapely.simplify(poly.exterior, tolerance))
    d = np.diff(xy, axis=0)
    w = np.hypot(d[:, 0], d[:, 1])
    a = 4.0 * np.arctan2(d[:, 1], d[:, 0])
    return math.atan2(float((w * np.sin(a)).sum()), float((w * np.cos(a)).sum())) / 4.0


def _runs(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of a closed ring (local frame) snapped to an axis and merged into alternating runs: per run, whether
    it is horizontal, its offset (length-weighted mean of its edges' midpoints across the axis) and weight."""
    d = np.diff(xy, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    mid = (xy[:-1] + xy[1:]) / 2
    offset = np.where(horizontal, mid[:, 1], mid[:, 0])
    change = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(change) < 2:
        return np.zeros(0, bool), np.zeros(0), np.zeros(0)
    order = np.roll(np.arange(len(d)), -change[0])  # start where the axis changes: no run wraps around
    horizontal, offset, length = horizontal[order], offset[order], length[order]
    starts = np.flatnonzero(np.r_[True, horizontal[1:] != horizontal[:-1]])
    weight = np.add.reduceat(length, starts)
    mean = np.add.reduceat(offset * length, starts) / np.maximum(weight, 1e-12)
    return horizontal[starts], mean, weight


def _corners(horizontal: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Closed ring of the corners between consecutive runs (x from the vertical run, y from the horizontal)."""
    nxt = np.roll(offset, -1)
    x = np.where(horizontal, nxt, offset)
    y = np.where(horizontal, offset, nxt)
    xy = np.column_stack([x, y])
    return np.vstack([xy, xy[:1]])


def _drop_short(horizontal: np.ndarray, offset: np.ndarray, weight: np.ndarray,
                min_len: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove runs shorter than ``min_len``, shortest first; its two neighbours (same axis) merge into one."""
    while len(offset) > 4:
        xy = _corners(horizontal, offset)
        seg = np.hypot(*np.diff(xy, axis=0).T)  # run i spans corner i-1 .. corner i
        length = np.roll(seg, 1)
        i = int(np.argmin(length))
        if length[i] >= min_len:
            break
        n = len(offset)
        a, b = (i - 1) % n, (i + 1) % n
        w = weight[a] + weight[b]
        merged = (offset[a] * weight[a] + offset[b] * weight[b]) / max(w, 1e-12)
        keep = np.ones(n, bool)
        keep[[i, b]] = False
        offset, weight = offset.copy(), weight.copy()
        offset[a], weight[a] = merged, w
        horizontal, offset, weight = horizontal[keep], offset[keep], weight[keep]
    return horizontal, offset, weight


def _least_squares(horizontal: np.ndarray, offset: np.ndarray, pts: np.ndarray, trim: float) -> np.ndarray:
    """Each axis line moved to the mean (least squares) of the boundary points nearest to its segment, leaving
    out points within ``trim`` of the segment's ends (corners belong to both walls)."""
    for _ in range(LS_ROUNDS):
        xy = _corners(horizontal, offset)
        p0, p1 = np.roll(xy[:-1], 1, axis=0), xy[:-1]  # run i spans corner i-1 .. corner i
        d = p1 - p0
        seg_len = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)
        rel = pts[:, None, :] - p0[None]
        t = np.clip((rel * d[None]).sum(-1) / seg_len**2, 0.0, 1.0)
        dist = np.hypot(*(rel - t[..., None] * d[None]).transpose(2, 0, 1))
        near = np.argmin(dist, axis=1)
        along = t[np.arange(len(pts)), near] * seg_len[near]
        inner = (along >= np.minimum(trim, seg_len[near] / 4)) & \
            (along <= seg_len[near] - np.minimum(trim, seg_len[near] / 4))
        across = np.where(horizontal[near], pts[:, 1], pts[:, 0])
        sums = np.bincount(near[inner], across[inner], len(offset))
        counts = np.bincount(near[inner], minlength=len(offset))
        offset = np.where(counts > 0, sums / np.maximum(counts, 1), offset)
    return offset


def _square_ring(xy: np.ndarray, tolerance: float) -> np.ndarray | None:
    """A closed ring (local frame, pixels) as a right-angled ring fitted to its own points, or None."""
    dp = shapely.get_coordinates(shapely.simplify(shapely.linearrings(xy), min(tolerance, 1.5)))
    if len(dp) < 5:
        return None
    horizontal, offset, weight = _drop_short(*_runs(dp), tolerance)
    if len(offset) < 4 or len(offset) % 2 or len(offset) > MAX_WALLS:
        return None
    ring = shapely.linearrings(xy)
    # boundary points every half pixel, at most MAX_POINTS of them (bounds the point-to-wall distance arrays)
    pts = shapely.get_coordinates(shapely.segmentize(ring, max(0.5, ring.length / MAX_POINTS)))
    offset = _least_squares(horizontal, offset, pts, tolerance)
    horizontal, offset, _ = _drop_short(horizontal, offset, np.ones(len(offset)), 0.5)
    if len(offset) < 4:
        return None
    return _corners(horizontal, offset)


def _squared(poly: shapely.Polygon, theta: float, tolerance: float) -> shapely.Polygon | None:
    """``poly`` squared in the frame turned by ``theta`` (a hole that cannot be squared is filled), or None."""
    c, s = math.cos(theta), math.sin(theta)
    origin = np.asarray(poly.centroid.coords[0])
    to_local = np.array([[c, -s], [s, c]])  # row vectors: (xy - origin) @ R == rotate by -theta
    rings = []
    for i, ring in enumerate([poly.exterior, *poly.interiors]):
        squared = _square_ring((shapely.get_coordinates(ring) - origin) @ to_local, tolerance)
        if squared is None:
            if i == 0:
                return None
            continue  # a small or ragged hole is filled: squaring it would invent walls
        rings.append(squared @ to_local.T + origin)
    out = shapely.Polygon(rings[0], rings[1:])
    if not out.is_valid:
        out = shapely.Polygon(rings[0])
    return out if out.is_valid and not out.is_empty else None


def _misfit(cand: shapely.Polygon, poly: shapely.Polygon) -> tuple[float, float]:
    """Symmetric difference and area lost against the traced pixels, each per unit of the candidate's
    perimeter."""
    inter = shapely.area(shapely.intersection(cand, poly))
    per = max(cand.length, 1e-12)
    return (cand.area + poly.area - 2 * inter) / per, (poly.area - inter) / per


def regularize(poly: shapely.Polygon, tolerance: float, plain: shapely.Polygon | None = None) -> shapely.Polygon:
    """Square a traced polygon within ``tolerance`` (its units, pixels here); where that would fit its own
    pixels worse than a straight-walled outline does, ``plain`` (default: ``poly``) instead: the caller passes the
    outline it would have written without regularising."""
    plain = poly if plain is None else plain
    if poly.is_empty or tolerance <= 0 or not isinstance(poly, shapely.Polygon):
        return plain
    best, best_fit = None, math.inf
    for theta in sorted({round(angle % (math.pi / 2), 9) for angle in (dominant_angle(poly), edge_angle(poly, 1.0))}):
        cand = _squared(poly, theta, tolerance)
        if cand is None:
            continue
        fit = _misfit(cand, poly)[0]
        if fit < best_fit:
            best, best_fit = cand, fit
    if best is None:
        return plain
    misfit, lost = _misfit(best, poly)
    far = shapely.hausdorff_distance(best.exterior, poly.exterior)
    if misfit > MAX_MISFIT_PX or lost > MAX_LOST_PX or far > HAUSDORFF_TOLERANCES * tolerance + 1.0:
        return plain
    return best


def regularize_all(geoms: np.ndarray, tolerance: float, plain: np.ndarray) -> np.ndarray:
    """:func:`regularize` over an array of traced polygons, each with its plain outline as the fallback."""
    return np.array([regularize(g, tolerance, p) for g, p in zip(geoms, plain)], dtype=object)
