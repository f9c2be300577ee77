"""Right-angle regularisation of building footprints.

Hand-written: shapely, GEOS and scikit-image simplify outlines but none squares them. The footprint is
turned to its dominant direction (the long side of its minimum rotated rectangle), its Douglas-Peucker
outline is snapped edge by edge to that direction or its normal, runs of edges on the same axis are merged
(length-weighted mean offset) and consecutive axis lines are intersected. A result that moves the outline by
more than the tolerance (or is invalid) falls back to the plain simplified outline, so diagonal walls and
round shapes are never forced into a staircase of far-off right angles.
"""

from __future__ import annotations

import math

import numpy as np
import shapely


def dominant_angle(poly: shapely.Polygon) -> float:
    """Angle (radians) of the long side of the minimum rotated rectangle."""
    xy = shapely.get_coordinates(shapely.oriented_envelope(poly))
    if len(xy) < 3:
        return 0.0
    e1, e2 = xy[1] - xy[0], xy[2] - xy[1]
    v = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    return math.atan2(v[1], v[0])


def _square_ring(xy: np.ndarray) -> np.ndarray | None:
    """Closed ring (already rotated to the dominant axes) snapped to alternating horizontal/vertical edges."""
    pts = xy[:-1]
    if len(pts) < 4:
        return None
    d = np.roll(pts, -1, axis=0) - pts
    length = np.hypot(d[:, 0], d[:, 1])
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    offset = np.where(horizontal, (pts[:, 1] + pts[:, 1] + d[:, 1]) / 2, (pts[:, 0] + pts[:, 0] + d[:, 0]) / 2)
    # rotate so the ring starts where the axis changes, then merge runs of edges on the same axis
    change = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(change) < 4:
        return None
    start = change[0]
    horizontal, offset, length = (np.roll(a, -start) for a in (horizontal, offset, length))
    runs, axes = [], []
    i = 0
    while i < len(horizontal):
        j = i
        while j + 1 < len(horizontal) and horizontal[j + 1] == horizontal[i]:
            j += 1
        w = length[i:j + 1]
        runs.append(float(np.average(offset[i:j + 1], weights=w if w.sum() > 0 else None)))
        axes.append(bool(horizontal[i]))
        i = j + 1
    if len(runs) < 4 or len(runs) % 2:
        return None
    corners = []
    for a in range(len(runs)):
        b = (a + 1) % len(runs)
        h, v = (runs[a], runs[b]) if axes[a] else (runs[b], runs[a])
        corners.append((v, h))
    corners.append(corners[0])
    return np.array(corners)


def regularize(poly: shapely.Polygon, tolerance: float) -> shapely.Polygon:
    """Square a polygon's rings within ``tolerance`` (same units as the polygon); else its simplified outline."""
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if poly.is_empty or tolerance <= 0:
        return simple
    theta = dominant_angle(poly)
    c, s = math.cos(theta), math.sin(theta)
    origin = np.array(poly.centroid.coords[0])

    def to_local(xy: np.ndarray) -> np.ndarray:
        p = xy - origin
        return np.column_stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1]])

    def to_map(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([c * xy[:, 0] - s * xy[:, 1], s * xy[:, 0] + c * xy[:, 1]]) + origin

    rings = []
    for i, ring in enumerate([simple.exterior, *simple.interiors]):
        squared = _square_ring(to_local(shapely.get_coordinates(ring)))
        if squared is None:
            if i == 0:
                return simple
            continue  # a tiny or odd hole: dropped rather than kept unsquared
        rings.append(to_map(squared))
    out = shapely.Polygon(rings[0], rings[1:])
    if not out.is_valid or out.is_empty or out.hausdorff_distance(poly) > tolerance + 1.0:
        return simple
    return out
