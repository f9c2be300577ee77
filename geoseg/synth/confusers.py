"""Confusers: man-made surfaces that are neither building nor road, labelled background on purpose.

Real imagery is full of them (parking lots, plazas, pools, shipping containers, parked cars, bare soil, footpaths)
and a model that never saw them calls them building or road. They are placed in a local metric frame, off the
roads' keep-out zone and off the buildings, by their own generator (the classic look's layout is untouched), and
are painted only on background pixels (cars on roads stay road: a road under a car is still road).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from geoseg.synth.looks import Look

KINDS = ("parking", "plaza", "pool", "container", "car", "soil", "path")
ON_ROAD = 4  # index of "car" in KINDS: the only kind that may also be painted over road pixels
_CONTAINER_RGB = np.array([[178, 60, 48], [52, 84, 150], [60, 120, 80], [206, 120, 48], [220, 220, 214],
                           [120, 120, 124]], float)
_CAR_RGB = np.array([[230, 230, 232], [30, 30, 34], [150, 150, 156], [160, 30, 30], [40, 60, 130], [90, 90, 96]],
                    float)


@dataclass
class Confusers:
    """Polygons (local metres) with kind index, colour, stripe direction/period/contrast and height (shadows)."""

    geoms: list = field(default_factory=list)
    kind: list = field(default_factory=list)
    rgb: list = field(default_factory=list)
    stripe: list = field(default_factory=list)  # (dir x, dir y, period m, contrast)
    height: list = field(default_factory=list)

    def add(self, geoms: object, kind: str, rgb: np.ndarray, stripe: tuple = (1.0, 0.0, 1.0, 0.0),
            height: float = 0.0) -> None:
        geoms = list(np.atleast_1d(np.asarray(geoms, dtype=object)))
        rgb = np.broadcast_to(np.asarray(rgb, float), (len(geoms), 3))
        self.geoms += geoms
        self.kind += [KINDS.index(kind)] * len(geoms)
        self.rgb += list(np.clip(rgb, 10, 245))
        self.stripe += [stripe] * len(geoms)
        self.height += [height] * len(geoms)


def _rect(c: np.ndarray, u: np.ndarray, a: float, b: float) -> shapely.Polygon:
    v = np.array([-u[1], u[0]])
    pts = [c + sa * a / 2 * u + sb * b / 2 * v for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return shapely.Polygon(pts)


def _cars_in(c: np.ndarray, u: np.ndarray, a: float, b: float, rng: np.random.Generator,
             out: Confusers) -> None:
    """Rows of parked cars along the lot's long side, some stalls empty."""
    v = np.array([-u[1], u[0]])
    for row in (-1, 1):
        centre = c + row * (b / 2 - 2.8) * v
        for s in np.arange(-a / 2 + 1.6, a / 2 - 1.2, 2.6):
            if rng.random() < 0.6:
                car = _rect(centre + s * u, v, 4.4, 1.8)
                out.add(car, "car", _CAR_RGB[rng.integers(len(_CAR_RGB))] * rng.uniform(0.9, 1.1), height=1.5)


class _Placer:
    """Free spots for confusers: inside the frame, off the roads' keep-out zone, the buildings and each other."""

    def __init__(self, rng: np.random.Generator, road_tree: shapely.STRtree, blds: np.ndarray, w: float,
                 h: float) -> None:
        self.rng, self.road_tree, self.w, self.h = rng, road_tree, w, h
        taken = list(shapely.buffer(blds, 1.5)) if len(blds) else []
        self.taken_tree = [shapely.STRtree(taken)] if taken else []
        self.placed: list = []

    def free(self, g: shapely.Geometry) -> bool:
        if not shapely.within(g, shapely.box(0, 0, self.w, self.h)) or \
                self.road_tree.query(g, predicate="intersects").size:
            return False
        if any(t.query(g, predicate="intersects").size for t in self.taken_tree):
            return False
        return not any(shapely.intersects(g, p) for p in self.placed[-400:])

    def spot(self, a: float, b: float) -> tuple[shapely.Polygon, np.ndarray, np.ndarray] | None:
        """A free a x b rectangle at a random place and angle (12 tries), claimed; None when none was free."""
        for _ in range(12):
            c, ang = self.rng.uniform([0, 0], [self.w, self.h]), self.rng.uniform(0, math.pi)
            u = np.array([math.cos(ang), math.sin(ang)])
            g = _rect(c, u, a, b)
            if self.free(g):
                self.placed.append(g)
                return g, c, u
        return None


def _lots(pl: _Placer, look: Look, area: float, out: Confusers) -> None:
    """Parking lots (asphalt like a road, with stall lines and cars), plazas and pools."""
    rng = pl.rng
    asphalt = look.road * np.asarray(look.road_tint) * 1.05
    for _ in range(rng.poisson(area / 20000)):
        a, b = rng.uniform(18, 50), rng.uniform(14, 30)
        got = pl.spot(a, b)
        if got:
            g, c, u = got
            out.add(g, "parking", asphalt * rng.uniform(0.85, 1.15), (u[0], u[1], 2.6, 0.35 * rng.random()))
            _cars_in(c, u, a, b, rng, out)
    for _ in range(rng.poisson(area / 45000)):  # plazas: light paving with a tile grid
        got = pl.spot(rng.uniform(16, 45), rng.uniform(16, 45))
        if got:
            g, _, u = got
            out.add(g, "plaza", np.asarray(look.plaza_rgb) * rng.uniform(0.85, 1.15, 3),
                    (u[0], u[1], rng.uniform(1.5, 4), 0.12))
    for _ in range(rng.poisson(area / 14000)):  # pools in yards
        got = pl.spot(rng.uniform(5, 11), rng.uniform(3, 5.5))
        if got:
            out.add(got[0], "pool", np.asarray(look.pool_rgb) * rng.uniform(0.85, 1.15, 3))


def _yards(pl: _Placer, look: Look, area: float, out: Confusers) -> None:
    """Container yards (bright boxes about the size of a small house), bare soil and footpaths."""
    rng, w, h = pl.rng, pl.w, pl.h
    for _ in range(rng.poisson(area / 60000)):
        a, b = rng.uniform(20, 40), rng.uniform(12, 24)
        got = pl.spot(a, b)
        if got:
            _, c, u = got
            v, length = np.array([-u[1], u[0]]), rng.choice([6.1, 12.2])
            for s in np.arange(-a / 2 + length / 2, a / 2 - length / 2 + 0.1, length + 0.4):
                for t in np.arange(-b / 2 + 1.3, b / 2 - 1.2, 2.6 + rng.choice([0.2, 3.0])):
                    out.add(_rect(c + s * u + t * v, u, length, 2.4), "container",
                            _CONTAINER_RGB[rng.integers(len(_CONTAINER_RGB))] * rng.uniform(0.85, 1.1), height=2.6)
    for _ in range(rng.poisson(area / 30000)):  # bare soil: construction sites, tracks
        c, r = rng.uniform([0, 0], [w, h]), rng.uniform(8, 25)
        g = shapely.union_all(shapely.buffer(shapely.points(c + rng.normal(0, r / 2, (5, 2))), r / 2))
        if pl.free(g):
            pl.placed.append(g)
            out.add(g, "soil", np.asarray(look.soil) * rng.uniform(0.85, 1.1, 3))
    for _ in range(rng.poisson(area / 25000)):  # footpaths: narrow, pale, not road; only painted on background
        p0 = rng.uniform([0, 0], [w, h])
        pts = p0 + np.cumsum(rng.normal(0, 25, (4, 2)), axis=0)
        out.add(shapely.buffer(shapely.linestrings(np.vstack([p0, pts])), rng.uniform(0.7, 1.4)), "path",
                np.asarray(look.path_rgb) * rng.uniform(0.85, 1.15, 3))


def _road_cars(rng: np.random.Generator, look: Look, roads: list, w: float, h: float, out: Confusers) -> None:
    """Parked and moving cars on roads."""
    for line, width in roads:
        if rng.random() > 0.3 * look.confusers or line.length < 10:
            continue
        for d in np.arange(rng.uniform(0, 20), line.length, rng.uniform(25, 90)):
            p, q = (shapely.get_coordinates(shapely.line_interpolate_point(line, x))[0] for x in (d, d + 1.0))
            u = (q - p) / max(np.hypot(*(q - p)), 1e-9)
            side = rng.choice([-1, 1]) * width / 4
            c = p + side * np.array([-u[1], u[0]])
            if 0 < c[0] < w and 0 < c[1] < h:
                out.add(_rect(c, u, 4.4, 1.8), "car", _CAR_RGB[rng.integers(len(_CAR_RGB))], height=1.5)


def place_confusers(seed: int, look: Look, road_tree: shapely.STRtree, blds: np.ndarray, roads: list,
                    w: float, h: float) -> Confusers:
    """Confusers for one scene (empty when the look has none)."""
    out = Confusers()
    if look.confusers <= 0:
        return out
    pl = _Placer(np.random.default_rng([seed, 0xC0F]), road_tree, blds, w, h)
    area = w * h * look.confusers
    _lots(pl, look, area, out)
    _yards(pl, look, area, out)
    _road_cars(pl.rng, look, roads, w, h, out)
    return out
