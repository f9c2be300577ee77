"""Layout of roads, buildings, fields and trees in a local frame (metres, x right, y down from the top-left)."""

from __future__ import annotations

import math

import numpy as np
import shapely

from geoseg.synth.looks import Look
from geoseg.synth.noise import _point_noise

_FIELD_VEG = np.array([0.9, 0.35, 0.08, 0.5, 0.8])


class _Occupancy:
    """Grid hash of placed footprints, so overlap checks stay local on huge scenes."""

    def __init__(self, cell: float = 60.0) -> None:
        self.cell = cell
        self.cells: dict[tuple[int, int], list[object]] = {}

    def _keys(self, geoms: np.ndarray) -> set[tuple[int, int]]:
        b = shapely.total_bounds(geoms) // self.cell
        return {(i, j) for i in range(int(b[0]), int(b[2]) + 1) for j in range(int(b[1]), int(b[3]) + 1)}

    def hits(self, geoms: np.ndarray) -> bool:
        near = [g for k in self._keys(geoms) for g in self.cells.get(k, ())]
        return bool(near) and bool(shapely.intersects(np.array(near)[:, None], geoms[None, :]).any())

    def add(self, geoms: np.ndarray) -> None:
        for k in self._keys(geoms):
            self.cells.setdefault(k, []).extend(geoms)


def _road_lines(rng: np.random.Generator, w: float, h: float, density: float) -> list[tuple[object, float]]:
    """A perturbed, rotated grid (some roads curved, some cut short) plus one or two diagonals."""
    spacing = rng.uniform(95, 150) / math.sqrt(density)
    theta = rng.uniform(-0.45, 0.45)
    cx, cy, reach = w / 2, h / 2, 0.5 * math.hypot(w, h) + spacing
    t = np.linspace(-reach, reach, max(8, int(2 * reach / 12)))
    out = []
    for ang in (theta, theta + math.pi / 2 + rng.uniform(-0.08, 0.08)):
        d, n = np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])
        offs = np.arange(-reach + rng.uniform(0, spacing), reach, spacing)
        for v0 in offs + rng.uniform(-0.2, 0.2, offs.size) * spacing:
            if rng.random() < 0.08:
                continue
            amp = rng.uniform(4, 28) if rng.random() < 0.35 else 0.0
            v = v0 + amp * np.sin(2 * np.pi * t / rng.uniform(350, 900) + rng.uniform(0, 2 * np.pi))
            keep = slice(None)
            if rng.random() < 0.2:  # a road that starts or ends inside the scene
                a, b = np.sort(rng.uniform(-reach, reach, 2))
                keep = (t >= a) & (t <= max(b, a + 2 * spacing))
            xy = np.array([cx, cy]) + t[keep, None] * d + v[keep, None] * n
            if len(xy) >= 2:
                out.append((shapely.linestrings(xy), rng.uniform(5, 9)))
    if out and rng.random() < 0.7:  # an arterial
        i = int(rng.integers(len(out)))
        out[i] = (out[i][0], rng.uniform(10, 14))
    for _ in range(int(rng.integers(1, 3))):
        ang = theta + rng.choice([-1, 1]) * (math.pi / 4 + rng.uniform(-0.25, 0.25))
        p = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
        xy = p + t[:, None] * np.array([math.cos(ang), math.sin(ang)])
        out.append((shapely.linestrings(xy), rng.uniform(8, 14)))
    return out


def _building_group(rng: np.random.Generator, o: np.ndarray, u: np.ndarray, v: np.ndarray,
                    kind: str) -> tuple[list[np.ndarray], float, float]:
    """Footprint rings for one placement in a frame (u along the road, v away from it).

    Terraced houses share wall vertices computed by the same expression, so neighbours touch exactly.
    Returns (rings, frontage length, height in metres).
    """
    def ring(ab: list[tuple[float, float]]) -> np.ndarray:
        a = np.array(ab)
        return o + a[:, :1] * u + a[:, 1:] * v

    if kind == "terrace":
        n, depth = int(rng.integers(4, 9)), rng.uniform(8.5, 12.0)
        edges = np.concatenate([[0.0], np.cumsum(rng.uniform(5.0, 7.5, n))])
        rings = [ring([(a0, 0.0), (a1, 0.0), (a1, depth), (a0, depth)]) for a0, a1 in zip(edges[:-1], edges[1:])]
        return rings, float(edges[-1]), rng.uniform(7, 10)
    if kind == "flat":
        fw, d = rng.uniform(22, 40), rng.uniform(18, 36)
        return [ring([(0, 0), (fw, 0), (fw, d), (0, d)])], fw, rng.uniform(6, 18)
    fw, d = rng.uniform(8, 16), rng.uniform(8, 14)
    if rng.random() < 0.35:  # L-shape: a wing at the back
        ww, ext = rng.uniform(0.35, 0.6) * fw, rng.uniform(4, 10)
        pts = [(0, 0), (fw, 0), (fw, d + ext), (fw - ww, d + ext), (fw - ww, d), (0, d)]
        if rng.random() < 0.5:
            pts = [(fw - a, b) for a, b in pts]
        return [ring(pts)], fw, rng.uniform(5, 9)
    return [ring([(0, 0), (fw, 0), (fw, d), (0, d)])], fw, rng.uniform(5, 9)


def _place_buildings(rng, spec, roads, road_tree, w, h):  # noqa: ANN001, ANN202 (private, one caller)
    """Walk both sides of every road and set houses, terraces and flat blocks facing it.

    Returns (footprint, kind, height, placement number, unit vector along the road) per building, in placement
    order: the units of one terraced row are consecutive, each one's predecessor on its -u side.
    """
    occ, out = _Occupancy(), []
    gy, gx = np.mgrid[0:h:32j, 0:w:32j]  # urban share of the scene is ~65% x density, whatever its size
    thresh = np.quantile(_point_noise(spec.seed, 11, gy, gx, 350.0), 1 - min(0.65 * spec.density, 1.0))
    lo, hi = np.array([0.5, 0.5]), np.array([w - 0.5, h - 0.5])
    for line, width in roads:
        for part in shapely.get_parts(shapely.intersection(line, shapely.box(-40, -40, w + 40, h + 40))):
            length = part.length
            pts = shapely.get_coordinates(shapely.line_interpolate_point(part, np.arange(0, length + 3.0, 1.0)))
            urban = _point_noise(spec.seed, 11, pts[:, 1], pts[:, 0], 350.0)  # once per road: the hot loop
            for side in (1.0, -1.0):
                s = rng.uniform(0, 12)
                while s < length - 2:
                    i = int(s)
                    p, tvec = pts[i], pts[i + 2] - pts[i]
                    s0 = s
                    s += 3.0
                    if urban[i] < thresh:
                        s += 12.0
                        continue
                    kind = rng.choice(["house", "terrace", "flat"], p=[0.55, 0.3, 0.15])
                    jitter = rng.uniform(-0.05, 0.05) if kind == "house" else 0.0
                    ang = math.atan2(tvec[1], tvec[0]) + jitter
                    u = np.array([math.cos(ang), math.sin(ang)])
                    v = side * np.array([-u[1], u[0]])
                    setback = width / 2 + rng.uniform(2.5, 7) + (3 if kind == "flat" else 0)
                    rings, front, height = _building_group(rng, p + v * setback, u, v, kind)
                    corners = np.concatenate(rings)
                    if (corners < lo).any() or (corners > hi).any():
                        continue
                    polys = shapely.polygons(rings)
                    if road_tree.query(polys, predicate="intersects").size or occ.hits(shapely.buffer(polys, 1.0)):
                        continue
                    occ.add(polys)
                    gid = len(out)
                    out += [(g, kind, height + (rng.uniform(-0.3, 0.3) if kind == "terrace" else 0), gid, u)
                            for g in polys]
                    s = s0 + front + rng.uniform(2, 9)
    return out


def _roof_colours(rng: np.random.Generator, kinds: list[str], look: Look) -> np.ndarray:
    """Roof colour per building; a terrace row shares a base colour with slight per-house variation."""
    roofs, flats, roof_p = np.asarray(look.roofs, float), np.asarray(look.flats, float), np.asarray(look.roof_p)
    rgb, base = np.zeros((len(kinds) + 1, 3)), roofs[0]
    for i, kind in enumerate(kinds, start=1):
        if kind == "flat":
            rgb[i] = flats[rng.integers(len(flats))] + rng.uniform(-8, 8, 3)
        elif kind == "terrace":
            if i == 1 or kinds[i - 2] != "terrace" or rng.random() < 0.15:
                base = roofs[rng.choice(len(roofs), p=roof_p)]
            rgb[i] = base * rng.uniform(0.9, 1.1) + rng.uniform(-5, 5, 3)
        else:
            rgb[i] = roofs[rng.choice(len(roofs), p=roof_p)] + rng.uniform(-12, 12, 3)
    return np.clip(rgb, 20, 240)


def _fields(rng, roads_u, road_tree, blds, spec, w, h):  # noqa: ANN001, ANN202
    """Fields and parks: the blocks between roads that hold no building."""
    lines = [ln for ln, _ in roads_u] + [shapely.boundary(shapely.box(0, 0, w, h))]
    blocks = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all(
        [shapely.intersection(ln, shapely.box(-1, -1, w + 1, h + 1)) for ln in lines]))))
    btree = shapely.STRtree(blds) if len(blds) else None
    polys, meta = [], []
    for blk in blocks:
        if blk.area < 600 or (btree is not None and btree.query(blk, predicate="intersects").size):
            continue
        near = road_tree.geometries[road_tree.query(blk)]
        blk = shapely.buffer(shapely.difference(blk, shapely.union_all(near)), -1.5)
        env = np.array(shapely.oriented_envelope(blk).exterior.coords) if not blk.is_empty else None
        urban = _point_noise(spec.seed, 11, blk.centroid.y, blk.centroid.x, 350.0)[0] if env is not None else 0
        for part in shapely.get_parts(blk):
            if part.area < 300 or env is None:
                continue
            e = env[1] - env[0] if np.hypot(*(env[1] - env[0])) > np.hypot(*(env[2] - env[1])) else env[2] - env[1]
            park = urban > 0.55 or rng.random() < 0.15
            k = 4 if park else int(rng.integers(4))
            polys.append(part)
            meta.append((*(e / np.hypot(*e)), rng.uniform(5, 8) if park else rng.uniform(1.5, 4), k))
    return polys, meta


def _trees(rng, spec, roads_u, road_tree, blds, parks, w, h, over_roof=0.0):  # noqa: ANN001, ANN202
    """Crown centres and radii (metres): clumps, scattered trees, street rows and park trees, and whether each
    overhangs a roof (a share ``over_roof`` of the crowns that touch a building, rooted outside it, is kept)."""
    area, pts = w * h, []
    for _ in range(rng.poisson(area / 5000)):
        c, k = rng.uniform([0, 0], [w, h]), rng.poisson(6) + 1
        pts.append(np.column_stack([c + rng.normal(0, rng.uniform(4, 14), (k, 2)), rng.uniform(2.5, 6, k)]))
    n = rng.poisson(area / 1500)
    pts.append(np.column_stack([rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(2, 4.5, n)]))
    for line, width in roads_u:
        if rng.random() < 0.35:
            step, off = rng.uniform(7, 11), width / 2 + rng.uniform(1.5, 3)
            for side in (off, -off):
                curve = shapely.offset_curve(line, side)
                d = np.arange(rng.uniform(0, step), curve.length, step)
                xy = shapely.get_coordinates(shapely.line_interpolate_point(curve, d))
                pts.append(np.column_stack([xy, rng.uniform(2, 3.5, len(xy))]))
    for park in parks:
        x0, y0, x1, y1 = park.bounds
        n = rng.poisson(park.area / 400)
        pts.append(np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n), rng.uniform(2.5, 6, n)]))
    xyr = np.concatenate(pts) if pts else np.zeros((0, 3))
    x, y, r = xyr.T
    xyr = xyr[(x > -r) & (x < w + r) & (y > -r) & (y < h + r)]
    crowns = _crown_polys(rng, xyr)
    bad = road_tree.query(shapely.points(xyr[:, :2]), predicate="intersects")[0]
    over = np.zeros(len(xyr), bool)
    if len(blds):
        btree = shapely.STRtree(shapely.buffer(blds, 0.5))
        near_bld = np.unique(btree.query(crowns, predicate="intersects")[0])
        if over_roof > 0 and near_bld.size:  # its own generator: the classic layout draws stay as they were
            rooted_in = np.unique(btree.query(shapely.points(xyr[near_bld, :2]), predicate="intersects")[0])
            pick = np.random.default_rng([spec.seed, 0x7EE]).random(near_bld.size) < over_roof
            pick[rooted_in] = False
            over[near_bld[pick]] = True
            near_bld = near_bld[~pick]
        bad = np.concatenate([bad, near_bld])
    keep = np.setdiff1d(np.arange(len(xyr)), bad)
    return xyr[keep], crowns[keep], over[keep]


def _crown_polys(rng: np.random.Generator, xyr: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Irregular 12-gons: tree crowns look lumpy from above."""
    ang = np.linspace(0, 2 * np.pi, 13)[:-1]
    rad = xyr[:, 2:3] * (1 + 0.14 * rng.uniform(-1, 1, (len(xyr), 12)))
    ring = xyr[:, None, :2] + rad[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1)[None]
    if shift is not None:
        ring = ring + shift[:, None, :]
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1)) if len(xyr) else np.empty(0, object)
