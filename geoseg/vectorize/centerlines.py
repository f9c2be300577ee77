"""Road centerlines: skeleton → pixel graph → LineStrings joined at junctions, spurs pruned, smoothed.

A network class is processed per *cell* of a global grid (see :mod:`geoseg.vectorize.reduce`): the skeleton
is computed on the cell plus ``CELL_MARGIN`` pixels of context, so near the cell's edges it equals the
skeleton of the whole scene (thinning and pruning are local within the margin). Lines are then cut exactly
at the cell edges, midway between two skeleton pixels: both neighbouring cells compute the same cut point, so
the network stays connected across cells (and blocks), and the result never depends on the block size.

The graph tracing is hand-written (skan would do it, but it is not a dependency here) as whole-array work on
the skeleton's pixel list (scipy.sparse.csgraph), never a per-pixel Python walk: nodes are skeleton pixels with
one or three-plus neighbours, 8-connected junction pixels form one junction at their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy import sparse
from scipy.sparse import csgraph
from rasterio.windows import Window
from skimage.morphology import skeletonize

from geoseg.vectorize.morph import edt

_NBR = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


@dataclass
class PixelGraph:
    """The skeleton as a graph: pixels ``rr, cc`` (row-major), their 8-neighbour count, the node cluster of
    each node pixel (-1 on a chain pixel), each cluster's centre and whether it holds a dead end."""

    rr: np.ndarray
    cc: np.ndarray
    deg: np.ndarray
    node: np.ndarray
    centre: np.ndarray
    is_end: np.ndarray


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    graph = sparse.csr_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    return csgraph.connected_components(graph, directed=True, connection="weak")[1]


def _pixel_graph(skel: np.ndarray) -> tuple[PixelGraph, np.ndarray, np.ndarray, np.ndarray]:
    """The skeleton's pixel graph, and its 8-neighbour links (``src -> dst`` pixel pairs, and the ``(8, n)``
    neighbour pixel of each pixel or -1)."""
    h, w = skel.shape
    rr, cc = np.nonzero(skel)
    n = len(rr)
    index = np.full((h + 2, w + 2), -1, np.int32)
    index[rr + 1, cc + 1] = np.arange(n, dtype=np.int32)
    nb = index[rr[None] + 1 + _NBR[:, :1], cc[None] + 1 + _NBR[:, 1:]]  # (8, n) neighbour pixel or -1
    has = nb >= 0
    deg = has.sum(axis=0)
    src, dst = np.broadcast_to(np.arange(n), nb.shape)[has], nb[has]
    is_node = deg != 2
    # node clusters: 8-connected node pixels form one node, at their mean
    node_px = np.flatnonzero(is_node)
    both = is_node[src] & is_node[dst]
    compact = np.cumsum(is_node) - 1
    lab = _components(len(node_px), compact[src[both]], compact[dst[both]])
    n_nodes = int(lab.max()) + 1 if len(lab) else 0
    node = np.full(n, -1, np.int64)
    node[node_px] = lab
    count = np.maximum(np.bincount(lab, minlength=n_nodes), 1)
    centre = np.column_stack([np.bincount(lab, rr[node_px], n_nodes) / count,
                              np.bincount(lab, cc[node_px], n_nodes) / count])
    is_end = np.zeros(n_nodes, bool)
    is_end[lab[deg[node_px] == 1]] = True
    return PixelGraph(rr, cc, deg, node, centre, is_end), src, dst, nb


def _walk_chains(n: int, src: np.ndarray, dst: np.ndarray, is_node: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Chain pixels in walking order, each chain's first position in that order, its length and whether it is a
    closed loop; None without chain pixels. A chain starts at an end (fewer than two chain neighbours) or, on a
    closed loop, at its first pixel."""
    chain = ~is_node
    link = chain[src] & chain[dst]
    chain_deg = np.bincount(src[link], minlength=n)
    comp = _components(n, src[link], dst[link])
    px = np.flatnonzero(chain)
    if not len(px):
        return None
    key = np.where(chain_deg[px] < 2, px, px + n)
    best = np.full(n, 2 * n)
    np.minimum.at(best, comp[px], key)
    best = best[best < 2 * n]
    loop, starts = best >= n, np.where(best >= n, best - n, best)
    walk = sparse.csr_matrix((np.ones(len(src[link]) + len(starts), np.int8),
                              (np.concatenate([src[link], np.full(len(starts), n)]),
                               np.concatenate([dst[link], starts]))), shape=(n + 1, n + 1))
    order, pred = csgraph.depth_first_order(walk, n, directed=True, return_predecessors=True)
    order = order[1:]
    first = np.flatnonzero(pred[order] == n)
    length = np.diff(np.append(first, len(order)))
    loop_at = np.zeros(n, bool)
    loop_at[starts] = loop
    return order, first, length, loop_at[order[first]]


def _trace(skel: np.ndarray) -> tuple[np.ndarray, np.ndarray, PixelGraph]:
    """Pixel paths between nodes, as one flat array of pixel indices and each path's start offset (plus the end).

    Whole-array work, no per-pixel Python: chain pixels (exactly two neighbours) are the graph's edges, their
    8-connected runs are ordered by one depth-first walk (scipy.sparse.csgraph) from a virtual root linked to
    one end of each run (its smallest pixel on a closed loop), then closed by the node pixels at both ends.
    """
    graph, src, dst, nb = _pixel_graph(skel)
    is_node = graph.deg != 2
    chains = _walk_chains(len(graph.rr), src, dst, is_node)
    if chains is None:
        return np.empty(0, np.int64), np.zeros(1, np.int64), graph
    order, first, length, loop = chains
    node_nb = np.where((nb >= 0) & is_node[np.maximum(nb, 0)], nb, -1)
    head_px, tail_px = order[first], order[first + length - 1]
    head = node_nb[np.argmax(node_nb[:, head_px] >= 0, axis=0), head_px]
    tail = node_nb[7 - np.argmax(node_nb[::-1, tail_px] >= 0, axis=0), tail_px]
    tail = np.where(loop, head_px, tail)
    size = length + 2 - loop
    offsets = np.concatenate([[0], np.cumsum(size)])
    flat = np.empty(offsets[-1], np.int64)
    cid = np.repeat(np.arange(len(first)), length)
    flat[offsets[cid] + (~loop)[cid] + np.arange(len(order)) - first[cid]] = order
    flat[offsets[:-1][~loop]] = head[~loop]
    flat[offsets[1:] - 1] = tail
    return flat, offsets, graph


def _chaikin(xy: np.ndarray, offsets: np.ndarray, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Corner cutting that keeps both end points (so lines still meet at junctions and cell edges), on many
    lines at once: points ``xy`` with line ``i`` at ``offsets[i]:offsets[i + 1]``. A line of ``n >= 3`` points
    becomes ``[p0, r0, q1, r1, ..., q(n-2), p(n-1)]`` with ``q, r`` at 1/4 and 3/4 of each segment; shorter
    lines stay as they are."""
    for _ in range(rounds):
        n = np.diff(offsets)
        grow = n >= 3
        new = np.concatenate([[0], np.cumsum(np.where(grow, 2 * n - 2, n))])
        line = np.repeat(np.arange(len(n)), n)
        k = np.arange(len(xy)) - offsets[line]  # index within its line
        out = np.empty((new[-1], 2))
        pair = (line[:-1] == line[1:]) & grow[line[:-1]]
        slot = new[line[:-1][pair]] + 2 * k[:-1][pair]
        a, b = xy[:-1][pair], xy[1:][pair]
        out[slot] = 0.75 * a + 0.25 * b
        out[slot + 1] = 0.25 * a + 0.75 * b
        out[new[:-1][grow]] = xy[offsets[:-1][grow]]
        out[new[1:][grow] - 1] = xy[offsets[1:][grow] - 1]
        same = ~grow[line]
        out[new[line[same]] + k[same]] = xy[same]
        xy, offsets = out, new
    return xy, offsets


def _simplify(lines: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker, and GEOS's topology-preserving simplifier (much slower) only where plain DP would make a
    line cross itself or collapse a closed loop."""
    out = shapely.simplify(lines, tolerance, preserve_topology=False)
    redo = shapely.is_closed(lines) | ~shapely.is_simple(out)
    if redo.any():
        out[redo] = shapely.simplify(lines[redo], tolerance)
    return out


def _run_means(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    total = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (total[end] - total[start]) / (end - start)


def _pool(mask: np.ndarray, step: int) -> np.ndarray:
    """``mask`` on a grid ``step`` times coarser, anchored at its first pixel: a coarse pixel is set when at least
    half of its pixels are (a last partial row or column of them lies past the scene's edge)."""
    h, w = mask.shape
    hh, ww = -(-h // step), -(-w // step)
    full = np.zeros((hh * step, ww * step), np.uint8)
    full[:h, :w] = mask
    # step² strided adds: much faster than a sum over the axes of a reshaped view
    count = np.zeros((hh, ww), np.uint8 if step * step < 256 else np.int32)
    for dr in range(step):
        for dc in range(step):
            count += full[dr::step, dc::step]
    return count.astype(np.int32) * 2 >= step * step


@dataclass
class _Paths:
    """The traced paths on the (coarse) skeleton grid: each path point's pixel ``r, c``, its path ``pid``,
    whether it continues the previous point's path (``same``), each path's ``head``/``tail`` position, whether
    the path is kept (``keep``: spurs pruned) and each point's ``xy`` in local scene pixels."""

    r: np.ndarray
    c: np.ndarray
    pid: np.ndarray
    same: np.ndarray
    head: np.ndarray
    tail: np.ndarray
    keep: np.ndarray
    xy: np.ndarray


def _paths(flat: np.ndarray, offsets: np.ndarray, g: PixelGraph, shape: tuple[int, int], step: int,
           spur_px: float) -> _Paths:
    """Point coordinates of the traced paths; short dead ends (not at the crop's border) are pruned."""
    h, w = shape
    n_paths = len(offsets) - 1
    r, c = g.rr[flat], g.cc[flat]
    pid = np.repeat(np.arange(n_paths), np.diff(offsets))
    same = pid[1:] == pid[:-1]
    length = np.bincount(pid[1:][same], np.hypot(np.diff(r), np.diff(c))[same] * step, n_paths)
    head, tail = offsets[:-1], offsets[1:] - 1
    lab = g.node[flat]
    border = (r == 0) | (r == h - 1) | (c == 0) | (c == w - 1)
    dead = (lab >= 0) & g.is_end[np.maximum(lab, 0)] & ~border
    keep = ~((dead[head] | dead[tail]) & (length < spur_px))  # short dead ends and isolated flecks go
    xy = np.column_stack([c + 0.5, r + 0.5]) * step  # pixel centres, (x, y) local, in scene pixels
    for pos in (head, tail):  # junction ends meet at the junction's centre
        at = pos[(lab[pos] >= 0) & ~g.is_end[np.maximum(lab[pos], 0)]]
        xy[at] = (g.centre[lab[at]][:, ::-1] + 0.5) * step
    return _Paths(r, c, pid, same, head, tail, keep, xy)


def _cell_runs(p: _Paths, row0: int, col0: int, cell: tuple[int, int, int, int], step: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) positions of the runs of kept path points inside the cell."""
    r0, r1, c0, c1 = cell
    gr, gc = p.r * step + row0, p.c * step + col0  # each coarse pixel's first scene pixel
    inside = (gr >= r0) & (gr < r1) & (gc >= c0) & (gc < c1) & p.keep[p.pid]
    before = np.concatenate([[False], inside[:-1] & p.same])
    after = np.concatenate([inside[1:] & p.same, [False]])
    return np.flatnonzero(inside & ~before), np.flatnonzero(inside & ~after) + 1


def _run_points(p: _Paths, s_run: np.ndarray, e_run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run as a line (flat points and offsets): its pixels, plus the midpoints with the outside neighbours
    at either end, so that both cells of an edge cut the line at the same point."""
    pre, post = s_run > p.head[p.pid[s_run]], e_run < p.tail[p.pid[s_run]] + 1
    n_run = e_run - s_run
    size = n_run + pre + post
    lone = size == 1  # (a lone point: doubled, then dropped as a zero-length line by the caller)
    offsets = np.concatenate([[0], np.cumsum(size + lone)])
    run = np.repeat(np.arange(len(n_run)), n_run)
    k = np.arange(len(run)) - np.repeat(np.cumsum(n_run) - n_run, n_run)
    pts = np.empty((offsets[-1], 2))
    pts[offsets[run] + pre[run] + k] = p.xy[s_run[run] + k]
    pts[offsets[:-1][pre]] = (p.xy[s_run[pre] - 1] + p.xy[s_run[pre]]) / 2
    pts[offsets[1:][post] - 1] = (p.xy[e_run[post] - 1] + p.xy[e_run[post]]) / 2
    pts[offsets[1:][lone] - 1] = pts[offsets[:-1][lone]]
    return pts, offsets


def centerlines(mask: np.ndarray, prob: np.ndarray, win: Window, cell: Window, spur_px: float, smooth_px: float,
                step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centerlines of ``mask`` (a cell with its margin, on window ``win`` of the scene) inside the cell's window
    ``cell``; returns (global pixel LineStrings, estimated widths in pixels, mean class probability along each
    line, stable ids).

    The skeleton is traced on a grid ``step`` pixels coarser (the offsets of ``win`` and the cell edges are
    multiples of it, so the grid is global to the scene), because thinning costs per pixel and per pass;
    lengths, widths and coordinates come back in scene pixels.
    """
    row0, col0 = int(win.row_off), int(win.col_off)
    (r0, r1), (c0, c1) = cell.toranges()
    empty = (np.empty(0, object), np.empty(0), np.empty(0), np.empty(0, np.int64))
    if not mask.any():
        return empty
    small = _pool(mask, step) if step > 1 else mask
    flat, offsets, g = _trace(skeletonize(small))
    if not len(flat):
        return empty
    p = _paths(flat, offsets, g, small.shape, step, spur_px)
    s_run, e_run = _cell_runs(p, row0, col0, (r0, r1, c0, c1), step)
    if not len(s_run):
        return empty
    h, w = small.shape
    # OpenCV's exact EDT returns ~1e19 where the crop has no background at all, hence the cap
    dist = np.minimum(edt(small), h + w) * step
    widths = 2.0 * _run_means(dist[p.r, p.c], s_run, e_run)
    # the class probability at the scene pixel at the centre of each coarse pixel
    pr = np.minimum(p.r * step + step // 2, mask.shape[0] - 1)
    pc = np.minimum(p.c * step + step // 2, mask.shape[1] - 1)
    scores = _run_means(prob[pr, pc], s_run, e_run)
    pts, offsets = _chaikin(*_run_points(p, s_run, e_run))
    lines = shapely.linestrings(pts + (col0, row0), indices=np.repeat(np.arange(len(s_run)), np.diff(offsets)))
    lines = _simplify(lines, smooth_px)
    ok = shapely.length(lines) > 0
    if not ok.any():
        return empty
    lines, widths, scores = lines[ok], widths[ok], scores[ok]
    mid = np.floor(shapely.get_coordinates(shapely.line_interpolate_point(lines, 0.5, normalized=True)))
    ids = mid[:, 1].astype(np.int64) * (1 << 32) + mid[:, 0].astype(np.int64)
    return lines, widths, scores, ids
