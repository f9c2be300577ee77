"""Road centerlines: skeleton → pixel graph → LineStrings joined at junctions, spurs pruned, smoothed.

A network class is processed per *cell* of a global grid (see :mod:`geoseg.vectorize.reduce`): the skeleton
is computed on the cell plus ``CELL_MARGIN`` pixels of context, so near the cell's edges it equals the
skeleton of the whole scene (thinning and pruning are local within the margin). Lines are then cut exactly
at the cell edges, midway between two skeleton pixels: both neighbouring cells compute the same cut point, so
the network stays connected across cells (and blocks), and the result never depends on the block size.

The graph tracing is hand-written (skan would do it, but it is not a dependency here): nodes are skeleton
pixels with one or three-plus neighbours, 8-connected junction pixels form one junction at their mean.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from skimage.morphology import skeletonize

_NBR = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _trace(skel: np.ndarray) -> tuple[list[list[tuple[int, int]]], np.ndarray, dict[int, tuple[float, float]]]:
    """Pixel paths between nodes; returns (paths, node label raster, junction centre per node label)."""
    deg = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") - 1
    deg = np.where(skel, deg, 0)
    nodes = skel & (deg != 2)
    node_lab, n_nodes = ndimage.label(nodes, structure=np.ones((3, 3)))
    centres = {}
    if n_nodes:
        means = ndimage.center_of_mass(nodes, node_lab, range(1, n_nodes + 1))
        centres = {i + 1: (float(r), float(c)) for i, (r, c) in enumerate(means)}
    # plain Python sets: the walk is per pixel, and set lookups are far cheaper than numpy scalar indexing
    pix = set(zip(*(a.tolist() for a in np.nonzero(skel))))
    node_of = dict(zip(zip(*(a.tolist() for a in np.nonzero(nodes))), node_lab[nodes].tolist()))
    visited: set[tuple[int, int]] = set()
    paths: list[list[tuple[int, int]]] = []
    seen_links: set[tuple[int, int]] = set()

    def nbrs(p: tuple[int, int]) -> list[tuple[int, int]]:
        return [q for q in ((p[0] + dr, p[1] + dc) for dr, dc in _NBR) if q in pix]

    for p in sorted(node_of):
        for q in nbrs(p):
            if q in node_of:
                a, b = node_of[p], node_of[q]
                if a < b and (a, b) not in seen_links:  # two nodes side by side: a one-step edge
                    seen_links.add((a, b))
                    paths.append([p, q])
                continue
            if q in visited:
                continue
            path, prev, cur = [p, q], p, q
            visited.add(q)
            while True:
                nxt = [n for n in nbrs(cur) if n != prev and n not in path[-3:]]
                if not nxt:
                    break
                node_next = [n for n in nxt if n in node_of]
                step = node_next[0] if node_next else nxt[0]
                path.append(step)
                if step in node_of or step in visited:
                    break
                visited.add(step)
                prev, cur = cur, step
            paths.append(path)
    for p in sorted(pix - visited - set(node_of)):  # closed loops without any node
        if p in visited:
            continue
        path, prev, cur = [p], None, p
        visited.add(p)
        while True:
            nxt = [n for n in nbrs(cur) if n != prev and n not in visited]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            visited.add(cur)
            path.append(cur)
        path.append(path[0])
        paths.append(path)
    return paths, node_lab, centres


def _chaikin(xy: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Corner cutting that keeps both end points (so lines still meet at junctions and cell edges)."""
    for _ in range(rounds):
        if len(xy) < 3:
            return xy
        q = 0.75 * xy[:-1] + 0.25 * xy[1:]
        r = 0.25 * xy[:-1] + 0.75 * xy[1:]
        xy = np.vstack([xy[:1], np.column_stack([q, r]).reshape(-1, 2)[1:-1], xy[-1:]])
    return xy


def centerlines(mask: np.ndarray, prob: np.ndarray, row0: int, col0: int, cell: tuple[int, int, int, int],
                spur_px: float, smooth_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centerlines of ``mask`` (a cell with its margin, at global ``row0, col0``) inside the cell
    ``(r0, r1, c0, c1)``; returns (global pixel LineStrings, estimated widths in pixels, mean class probability
    along each line, stable ids)."""
    empty = (np.empty(0, object), np.empty(0), np.empty(0), np.empty(0, np.int64))
    if not mask.any():
        return empty
    skel = skeletonize(mask)
    dist = ndimage.distance_transform_edt(mask)
    paths, node_lab, centres = _trace(skel)
    h, w = mask.shape
    ends = {int(v) for v in node_lab[skel & (ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3), np.uint8),
                                                              mode="constant") == 2)]}

    def at_border(p: tuple[int, int]) -> bool:
        return p[0] in (0, h - 1) or p[1] in (0, w - 1)

    kept = []
    for path in paths:
        a, b = path[0], path[-1]
        dead = [p for p in (a, b) if node_lab[p] in ends and not at_border(p)]
        length = float(np.hypot(*np.diff(np.array(path, float), axis=0).T).sum())
        if dead and length < spur_px:
            continue  # a short dead end, or an isolated fleck
        kept.append(path)
    r0, r1, c0, c1 = cell
    lines, widths, scores, ids = [], [], [], []
    for path in kept:
        px = np.array(path)
        g = px + (row0, col0)
        inside = (g[:, 0] >= r0) & (g[:, 0] < r1) & (g[:, 1] >= c0) & (g[:, 1] < c1)
        xy = np.column_stack([px[:, 1] + 0.5, px[:, 0] + 0.5])  # pixel centres, (x, y) local
        for k in (0, -1):  # junction ends meet at the junction's centre
            lab = int(node_lab[tuple(px[k])])
            if lab and lab not in ends:
                rc = centres[lab]
                xy[k] = (rc[1] + 0.5, rc[0] + 0.5)
        # runs of pixels inside the cell, each extended to the exact midpoint with its outside neighbour
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
        for s, e in zip(edges[::2], edges[1::2]):
            seg = xy[s:e]
            if s > 0:
                seg = np.vstack([(xy[s - 1] + xy[s]) / 2, seg])
            if e < len(xy):
                seg = np.vstack([seg, (xy[e - 1] + xy[e]) / 2])
            if len(seg) < 2:
                continue
            seg = _chaikin(seg)
            line = shapely.simplify(shapely.LineString(seg + (col0, row0)), smooth_px)
            if line.length == 0:
                continue
            lines.append(line)
            widths.append(2.0 * float(dist[px[s:e, 0], px[s:e, 1]].mean()))
            scores.append(float(prob[px[s:e, 0], px[s:e, 1]].mean()))
            mid = np.floor(shapely.get_coordinates(shapely.line_interpolate_point(line, 0.5, normalized=True))[0])
            ids.append(int(mid[1]) * (1 << 32) + int(mid[0]))
    if not lines:
        return empty
    return np.array(lines, dtype=object), np.array(widths), np.array(scores), np.array(ids, np.int64)
