"""Synthetic georeferenced aerial scenes with exact ground-truth vectors.

Tests, the sample tiles, the default model's training data and the benchmarks all need scenes of any size,
CRS and dtype whose labels are known exactly. A scene is a pure function of its :class:`SynthSpec`:

* :func:`make_truth` lays out roads, buildings (detached, L-shaped, terraced rows, large flat roofs) and the
  decor (fields, parks, trees, shadows) in a local metric frame and returns the truth layers in map
  coordinates (the decor stays private, cached per spec).
* :func:`render_window` paints any window. Every random value is a hash of (seed, global row, global col)
  or lives on a global lattice, so a pixel is the same whatever window renders it: scenes stream in any
  block size.
* Roads and buildings are painted from the class raster that :func:`label_window` rasterises from the truth
  with the window's own transform, so pixels and vectors agree exactly. Trees may overhang roads: those
  pixels still count as road (labels come from the vectors only); trees never overlap buildings.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyogrio.errors
import rasterio
import rasterio.errors
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.errors import ConfigError, OutputError

CLASSES = ("background", "building", "road")
LAYERS = ("buildings", "roads", "road_centerlines")
DTYPES = ("uint8", "uint16", "float32")
_BAND_NAMES = ("red", "green", "blue", "nir", "rededge", "swir1", "swir2")
_M_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SynthSpec:
    """Everything that defines a synthetic scene; equal specs give byte-identical scenes.

    uint16 scenes are the uint8 look times 257 (full 0-65535 range); float32 scenes are the uint8 look / 255.
    Valid pixels are never 0, so 0 can be the nodata value of every dtype. ``rotation`` turns the pixel grid
    counter-clockwise (degrees) about ``origin``. For a geographic CRS a degree counts as 111.32 km on both
    axes (the ground look is slightly stretched east-west; labels and vectors still agree exactly).
    """

    width: int
    height: int
    seed: int = 0
    crs: str = "EPSG:32631"
    gsd: float = 0.5
    origin: tuple[float, float] | None = None
    dtype: str = "uint8"
    bands: int = 3
    nodata_border: int = 0
    density: float = 1.0
    rotation: float = 0.0

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"SynthSpec: {what}")

        if int(self.width) < 1 or int(self.height) < 1 or int(self.seed) < 0:
            raise bad(f"width, height must be >= 1 and seed >= 0, got {self.width}x{self.height}, seed {self.seed}")
        for name in ("width", "height", "seed", "bands", "nodata_border"):  # normalised, so specs hash alike
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.origin is not None:
            object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))
        if self.dtype not in DTYPES:
            raise bad(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not 1 <= int(self.bands) <= 16:
            raise bad(f"bands must be 1..16, got {self.bands}")
        if not self.gsd > 0:
            raise bad(f"gsd must be > 0, got {self.gsd}")
        if self.nodata_border < 0 or self.density < 0:
            raise bad("nodata_border and density must be >= 0")
        try:
            crs = CRS.from_user_input(self.crs)
        except Exception as err:  # pyproj raises CRSError, but any failure means the same to the user
            raise bad(f"unknown CRS {self.crs!r} ({err}); use e.g. EPSG:32631") from err
        if crs.is_geographic and self.gsd > 1e-3:
            raise bad(f"gsd {self.gsd} is in degrees for the geographic CRS {self.crs}; pass e.g. 5e-6")

    @functools.cached_property
    def transform(self) -> Affine:
        """North-up (or rotated) affine of the scene's top-left pixel corner."""
        if self.origin is not None:
            x0, y0 = self.origin
        else:
            x0, y0 = (2.0, 48.0) if CRS.from_user_input(self.crs).is_geographic else (500_000.0, 5_000_000.0)
        return Affine.translation(x0, y0) @ Affine.rotation(self.rotation) @ Affine.scale(self.gsd, -self.gsd)

    @functools.cached_property
    def m_per_px(self) -> float:
        """Ground metres per pixel: object sizes are drawn in metres whatever the CRS unit."""
        crs = CRS.from_user_input(self.crs)
        if crs.is_geographic:
            return self.gsd * _M_PER_DEGREE
        return self.gsd * crs.axis_info[0].unit_conversion_factor


# --- deterministic noise: hash of global integer coordinates ---------------------------------------------

_C1, _C2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


def _hash(*keys: object) -> np.ndarray:
    """splitmix64 over broadcast integer keys (always arrays, so wrap-around never warns)."""
    h = np.zeros(1, np.uint64)
    for key in keys:
        k = np.atleast_1d(np.asarray(key)).astype(np.int64).astype(np.uint64)
        x = h ^ (k + _GOLD)
        x = (x ^ (x >> _S30)) * _C1
        x = (x ^ (x >> _S27)) * _C2
        h = x ^ (x >> _S31)
    return h


def _unit(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _grid_noise(seed: int, salt: int, rows: np.ndarray, cols: np.ndarray, cell: float) -> np.ndarray:
    """Value noise on a global lattice of ``cell`` pixels, evaluated on a (rows x cols) grid, in [0, 1]."""
    fr, fc = rows / cell, cols / cell
    i0, j0 = np.floor(fr).astype(np.int64), np.floor(fc).astype(np.int64)
    tr, tc = _smooth(fr - i0)[:, None], _smooth(fc - j0)[None, :]
    li, lj = np.arange(i0.min(), i0.max() + 2), np.arange(j0.min(), j0.max() + 2)
    lat = _unit(_hash(seed, salt, li[:, None], lj[None, :])).astype(np.float32)
    j = j0 - lj[0]
    across = lat[:, j] + (lat[:, j + 1] - lat[:, j]) * tc.astype(np.float32)  # separable: columns first
    i = i0 - li[0]
    return across[i] + (across[i + 1] - across[i]) * tr.astype(np.float32)


def _point_noise(seed: int, salt: int, y: np.ndarray, x: np.ndarray, cell: float) -> np.ndarray:
    """The same value noise at scattered points (used by the layout)."""
    fy, fx = np.asarray(y, float) / cell, np.asarray(x, float) / cell
    i, j = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    ty, tx = _smooth(fy - i), _smooth(fx - j)
    a, b = _unit(_hash(seed, salt, i, j)), _unit(_hash(seed, salt, i, j + 1))
    c, d = _unit(_hash(seed, salt, i + 1, j)), _unit(_hash(seed, salt, i + 1, j + 1))
    top, bot = a + (b - a) * tx, c + (d - c) * tx
    return top + (bot - top) * ty


# --- layout (local frame: metres, x right, y down from the top-left corner) ------------------------------

_ROOFS = np.array([[165, 78, 58], [185, 105, 70], [120, 86, 68], [112, 112, 118], [205, 204, 198], [64, 64, 70]])
_ROOF_P = np.array([0.28, 0.14, 0.18, 0.18, 0.1, 0.12])
_FLATS = np.array([[150, 150, 146], [196, 196, 190], [92, 92, 98], [128, 122, 112]])
_FIELDS = np.array([[98, 132, 58], [188, 170, 104], [128, 102, 76], [160, 160, 110], [112, 146, 72]])
_FIELD_VEG = np.array([0.9, 0.35, 0.08, 0.5, 0.8])


@dataclass
class _Model:
    """One scene's layout: the truth in map coordinates and the private decor in pixel coordinates."""

    truth: dict[str, gpd.GeoDataFrame]
    roof_rgb: np.ndarray  # (n_buildings + 1, 3), indexed by building id
    sun: np.ndarray  # unit shadow direction in pixel frame (away from the sun)
    fields: np.ndarray  # pixel-frame polygons, their stripe direction / period / colour / vegetation
    field_dir: np.ndarray
    field_period: np.ndarray
    field_rgb: np.ndarray
    field_veg: np.ndarray
    crowns: np.ndarray
    crown_shadows: np.ndarray
    tree_xyr: np.ndarray  # (n, 3): centre col, row and radius in pixels
    tree_rgb: np.ndarray
    marks: np.ndarray

    @functools.cached_property
    def index(self) -> dict[str, shapely.STRtree]:
        return {k: shapely.STRtree(getattr(self, k)) for k in ("fields", "crowns", "crown_shadows", "marks")}


class _Occupancy:
    """Grid hash of placed footprints, so overlap checks stay local on huge scenes."""

    def __init__(self, cell: float = 60.0) -> None:
        self.cell, self.cells = cell, {}

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
    """Walk both sides of every road and set houses, terraces and flat blocks facing it."""
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
                    out += [(g, kind, height + (rng.uniform(-0.3, 0.3) if kind == "terrace" else 0)) for g in polys]
                    s = s0 + front + rng.uniform(2, 9)
    return out


def _roof_colours(rng: np.random.Generator, kinds: list[str]) -> np.ndarray:
    """Roof colour per building; a terrace row shares a base colour with slight per-house variation."""
    rgb, base = np.zeros((len(kinds) + 1, 3)), _ROOFS[0]
    for i, kind in enumerate(kinds, start=1):
        if kind == "flat":
            rgb[i] = _FLATS[rng.integers(len(_FLATS))] + rng.uniform(-8, 8, 3)
        elif kind == "terrace":
            if i == 1 or kinds[i - 2] != "terrace" or rng.random() < 0.15:
                base = _ROOFS[rng.choice(len(_ROOFS), p=_ROOF_P)]
            rgb[i] = base * rng.uniform(0.9, 1.1) + rng.uniform(-5, 5, 3)
        else:
            rgb[i] = _ROOFS[rng.choice(len(_ROOFS), p=_ROOF_P)] + rng.uniform(-12, 12, 3)
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


def _trees(rng, spec, roads_u, road_tree, blds, parks, w, h):  # noqa: ANN001, ANN202
    """Crown centres and radii (metres): clumps, scattered trees, street rows and park trees."""
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
    if len(blds):
        near_bld = shapely.STRtree(shapely.buffer(blds, 0.5)).query(crowns, predicate="intersects")[0]
        bad = np.concatenate([bad, near_bld])
    keep = np.setdiff1d(np.arange(len(xyr)), bad)
    return xyr[keep], crowns[keep]


def _crown_polys(rng: np.random.Generator, xyr: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Irregular 12-gons: tree crowns look lumpy from above."""
    ang = np.linspace(0, 2 * np.pi, 13)[:-1]
    rad = xyr[:, 2:3] * (1 + 0.14 * rng.uniform(-1, 1, (len(xyr), 12)))
    ring = xyr[:, None, :2] + rad[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1)[None]
    if shift is not None:
        ring = ring + shift[:, None, :]
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1)) if len(xyr) else np.empty(0, object)


def _map(geoms: np.ndarray, spec: SynthSpec, scale: float) -> np.ndarray:
    """Local metres -> pixel frame (scale=1/m) -> map coordinates with the scene transform."""
    t = spec.transform

    def f(c: np.ndarray) -> np.ndarray:
        x, y = c[:, 0] * scale, c[:, 1] * scale
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])
    return shapely.transform(np.asarray(geoms, dtype=object), f)


@functools.lru_cache(maxsize=8)
def _model(spec: SynthSpec) -> _Model:
    rng = np.random.default_rng([spec.seed, 0x5E])
    m = spec.m_per_px
    w, h = spec.width * m, spec.height * m
    frame = shapely.box(0, 0, w, h)
    roads_u = _road_lines(rng, w, h, spec.density) if spec.density > 0 else []
    cl, rp = [], []  # (geometry, road id, width)
    for rid, (line, width) in enumerate(roads_u):
        cl += [(g, rid, width) for g in shapely.get_parts(shapely.intersection(line, frame)) if g.length > 0.5]
        poly = shapely.intersection(shapely.buffer(line, width / 2, cap_style="flat"), frame)
        rp += [(g, rid, width) for g in shapely.get_parts(poly) if g.area > 1]
    # keep-out zone: each centerline segment buffered (its union is the road + 1 m), so queries stay local
    segs = [(np.stack([c[:-1], c[1:]], 1), np.full(len(c) - 1, wd / 2 + 1.0))
            for c, wd in ((shapely.get_coordinates(ln), wd) for ln, wd in roads_u)]
    road_tree = shapely.STRtree(shapely.buffer(shapely.linestrings(np.concatenate([s for s, _ in segs])),
                                               np.concatenate([r for _, r in segs])) if segs else [])
    blds = _place_buildings(rng, spec, roads_u, road_tree, w, h)
    bgeom = np.array([g for g, _, _ in blds], dtype=object)
    kinds = [k for _, k, _ in blds]
    fpolys, fmeta = _fields(rng, roads_u, road_tree, bgeom, spec, w, h)
    fmeta = np.array(fmeta).reshape(-1, 4)
    parks = [p for p, mt in zip(fpolys, fmeta) if mt[3] == 4]
    xyr, crowns = _trees(rng, spec, roads_u, road_tree, bgeom, parks, w, h)
    az = rng.uniform(0, 2 * np.pi)
    sun = np.array([math.cos(az), math.sin(az)])
    marks = []
    for g, _, width in cl:
        if width >= 8:
            d = np.arange(rng.uniform(0, 9), g.length - 3, 9.0)
            a = shapely.get_coordinates(shapely.line_interpolate_point(g, d))
            b = shapely.get_coordinates(shapely.line_interpolate_point(g, d + 3))
            marks += list(shapely.buffer(shapely.linestrings(np.stack([a, b], 1)), 0.22, cap_style="flat"))
    crs = CRS.from_user_input(spec.crs)

    def gdf(rows: list, geoms: np.ndarray, cls: str, cols: dict) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame({**cols, "class": [cls] * len(rows)},
                                geometry=gpd.GeoSeries(_map(geoms, spec, 1 / m)), crs=crs)

    truth = {
        "buildings": gdf(blds, bgeom, "building", {
            "id": np.arange(1, len(blds) + 1, dtype=np.int64), "kind": kinds,
            "height_m": np.round([ht for _, _, ht in blds], 1)}),
        "roads": gdf(rp, np.array([g for g, _, _ in rp], dtype=object), "road", {
            "road_id": np.array([r for _, r, _ in rp], np.int64), "width_m": np.round([wd for *_, wd in rp], 1)}),
        "road_centerlines": gdf(cl, np.array([g for g, _, _ in cl], dtype=object), "road", {
            "road_id": np.array([r for _, r, _ in cl], np.int64), "width_m": np.round([wd for *_, wd in cl], 1)}),
    }
    px = xyr / m
    return _Model(
        truth=truth, roof_rgb=_roof_colours(rng, kinds), sun=sun,
        fields=shapely.transform(np.array(fpolys, dtype=object), lambda c: c / m),
        field_dir=fmeta[:, :2], field_period=fmeta[:, 2] / m, field_rgb=_FIELDS[fmeta[:, 3].astype(int)],
        field_veg=_FIELD_VEG[fmeta[:, 3].astype(int)],
        crowns=shapely.transform(crowns, lambda c: c / m),
        crown_shadows=_crown_polys(rng, px, sun * px[:, 2:3] * 1.6),
        tree_xyr=px, tree_rgb=np.column_stack([rng.uniform(40, 72, len(px)), rng.uniform(70, 102, len(px)),
                                               rng.uniform(34, 52, len(px))]),
        marks=shapely.transform(np.array(marks, dtype=object), lambda c: c / m),
    )


# --- public API -------------------------------------------------------------------------------------------


def make_truth(spec: SynthSpec) -> dict[str, gpd.GeoDataFrame]:
    """The scene's exact vectors in ``spec.crs``: layers buildings, roads, road_centerlines (fresh copies)."""
    return {k: v.copy() for k, v in _model(spec).truth.items()}


def _footprint(transform: Affine, shape: tuple[int, int]) -> shapely.Polygon:
    h, w = shape
    return shapely.polygons([transform @ xy for xy in ((0, 0), (w, 0), (w, h), (0, h))])


def _query(gdf: gpd.GeoDataFrame | None, area: shapely.Geometry) -> np.ndarray:
    """Sorted positions of features near ``area``: sorted, so overlaps paint in the same order in any window."""
    if gdf is None or len(gdf) == 0:
        return np.zeros(0, np.int64)
    return np.sort(gdf.sindex.query(area))


def _shapes(geoms: np.ndarray, values: object) -> list[tuple[object, object]]:
    """(geometry, value) pairs for rasterize; plain polygons go as coordinate arrays, which is much faster
    than rasterio asking each shapely object for its ``__geo_interface__``."""
    geoms = np.asarray(geoms, dtype=object)
    plain = (shapely.get_type_id(geoms) == 3) & (shapely.get_num_interior_rings(geoms) == 0)
    coords, ix = shapely.get_coordinates(shapely.get_exterior_ring(geoms[plain]), return_index=True)
    rings = iter(np.split(coords, np.flatnonzero(np.diff(ix)) + 1) if len(coords) else [])
    return [({"type": "Polygon", "coordinates": [next(rings)]} if p else g, v)
            for g, p, v in zip(geoms, plain, values)]


def label_window(truth: dict[str, gpd.GeoDataFrame], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Class raster (0 background, 1 building, 2 road; buildings over roads) of vectors on any pixel grid.

    Depends only on the vectors (layers "roads" and "buildings", in the grid's CRS) and the grid's affine,
    so training can label any scene the same way the synthetic painter does (all_touched=False).
    """
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) <= 0:
        return np.zeros((max(shape[0], 0), max(shape[1], 0)), np.uint8)
    area = _footprint(transform, shape)
    shapes: list[tuple[object, int]] = []
    for layer, value in (("roads", 2), ("buildings", 1)):
        gdf = truth.get(layer)
        geoms = np.asarray(gdf.geometry.values[_query(gdf, area)]) if gdf is not None and len(gdf) else []
        geoms = [g for g in geoms if g is not None and not g.is_empty]
        shapes += _shapes(geoms, [value] * len(geoms))
    if not shapes:
        return np.zeros(shape, np.uint8)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8", all_touched=False)


def _paint_index(geoms: np.ndarray, idx: np.ndarray, transform: Affine, shape: tuple[int, int],
                 all_touched: bool = False) -> np.ndarray:
    """Raster of (position in ``idx``) + 1 for each pixel covered by ``geoms[idx]``; 0 elsewhere."""
    if idx.size == 0:
        return np.zeros(shape, np.int32)
    return rasterize(_shapes(geoms[idx], range(1, idx.size + 1)), out_shape=shape, transform=transform, fill=0,
                     dtype="int32", all_touched=all_touched)


def _paint(spec: SynthSpec, truth: dict[str, gpd.GeoDataFrame], r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Float 0-255 image (bands, h, w) of a pixel-grid region, before blur, sensor noise and nodata."""
    mdl, m, seed, sun = _model(spec), spec.m_per_px, spec.seed, _model(spec).sun
    rows, cols, shape = r0 + np.arange(h) + 0.5, c0 + np.arange(w) + 0.5, (h, w)
    ptf = Affine.translation(c0, r0)  # decor lives in the pixel frame
    x, y = spec.transform @ (c0, r0)  # truth lives in map coordinates; same arithmetic (so the same bits)
    wtf = Affine.translation(x - spec.transform.c, y - spec.transform.f) @ spec.transform  # as windows.transform
    pbox = shapely.box(c0, r0, c0 + w, r0 + h)

    def noise(salt: int, metres: float) -> np.ndarray:
        return _grid_noise(seed, salt, rows, cols, max(metres / m, 1.0))

    lo, mid, soil = 0.7 * noise(1, 70) + 0.3 * noise(2, 18), noise(3, 5), noise(4, 45)
    t = np.clip(lo * 0.8 + (mid - 0.5) * 0.3 + (noise(6, 1.5) - 0.5) * 0.35, 0, 1)
    a = np.clip((soil - 0.64) * 7, 0, 1)
    img = np.stack([(d + (li - d) * t) * (1 - a) + s * a * (0.88 + 0.24 * mid)
                    for d, li, s in zip((62, 90, 42), (128, 140, 80), (152, 128, 98))])
    veg = 0.75 * (1 - a) + 0.1 * a

    idx = np.sort(mdl.index["fields"].query(pbox))
    sel = _paint_index(mdl.fields, idx, ptf, shape)
    if idx.size and (sel > 0).any():
        k = idx[sel[sel > 0] - 1]
        rr, cc = np.nonzero(sel)
        ph = (cols[cc] * mdl.field_dir[k, 0] + rows[rr] * mdl.field_dir[k, 1]) / mdl.field_period[k]
        lum = (1 - 0.16 * np.abs(ph - np.floor(ph) - 0.5) * 2) * (0.88 + 0.24 * mid[rr, cc])
        img[:, rr, cc] = (mdl.field_rgb[k] * lum[:, None]).T
        veg[rr, cc] = mdl.field_veg[k]

    lab = label_window(truth, wtf, shape)
    road = lab == 2
    g = 90 + 36 * lo[road] + 14 * mid[road]
    img[:, road] = np.stack([g, g, g * 1.04])
    veg[road] = 0.02
    idx = np.sort(mdl.index["marks"].query(pbox))
    marks = (_paint_index(mdl.marks, idx, ptf, shape, all_touched=True) > 0) & road
    img[:, marks] = np.array([[212], [212], [204]])

    blds = truth.get("buildings")
    bi = _query(blds, shapely.buffer(_footprint(wtf, shape), 40 / m * spec.gsd))
    geoms = np.asarray(blds.geometry.values[bi]) if bi.size else np.empty(0, object)
    shade = _paint_index(mdl.crown_shadows, np.sort(mdl.index["crown_shadows"].query(pbox)), ptf, shape) > 0
    if bi.size:
        height = blds["height_m"].to_numpy(float)[bi] if "height_m" in blds else np.full(bi.size, 7.0)
        off, tf = sun[None, :] * (height * 0.6 / m)[:, None], spec.transform
        offm = np.column_stack([tf.a * off[:, 0] + tf.b * off[:, 1], tf.d * off[:, 0] + tf.e * off[:, 1]])
        ci = shapely.get_coordinates(geoms, return_index=True)[1]
        moved = shapely.transform(geoms, lambda c: c + offm[ci])
        shadows = shapely.convex_hull(shapely.union(geoms, moved))
        shade |= _paint_index(shadows, np.arange(bi.size), wtf, shape) > 0
    img[:, shade] *= np.array([[0.42], [0.46], [0.58]])
    veg[shade] *= 0.6

    idx = np.sort(mdl.index["crowns"].query(pbox))
    sel = _paint_index(mdl.crowns, idx, ptf, shape)
    if idx.size and (sel > 0).any():
        k = idx[sel[sel > 0] - 1]
        rr, cc = np.nonzero(sel)
        x, y, r = mdl.tree_xyr[k].T
        dx, dy = cols[cc] - x, rows[rr] - y
        lum = (0.8 - 0.3 * (dx * sun[0] + dy * sun[1]) / r - 0.22 * (dx * dx + dy * dy) / (r * r)
               + 0.5 * (noise(7, 1.2)[rr, cc] - 0.5))
        img[:, rr, cc] = (mdl.tree_rgb[k] * lum[:, None]).T
        veg[rr, cc] = 1.0

    bld = lab == 1
    if bld.any() and bi.size:
        sel = _paint_index(geoms, np.arange(bi.size), wtf, shape)
        rr, cc = np.nonzero(bld & (sel > 0))
        k = sel[rr, cc] - 1
        ids = blds["id"].to_numpy(np.int64)[bi] if "id" in blds else bi + 1
        known = (ids >= 1) & (ids < len(mdl.roof_rgb))
        rgb = np.where(known[:, None], mdl.roof_rgb[np.where(known, ids, 0)],
                       _ROOFS[_hash(seed, 9, ids) % np.uint64(len(_ROOFS))])
        kind = blds["kind"].to_numpy(str)[bi] if "kind" in blds else np.where(
            shapely.area(geoms) * (m / spec.gsd) ** 2 > 500, "flat", "house")
        inv = ~spec.transform
        gpx = shapely.transform(geoms, lambda c: np.column_stack(
            [inv.a * c[:, 0] + inv.b * c[:, 1] + inv.c, inv.d * c[:, 0] + inv.e * c[:, 1] + inv.f]))
        env = shapely.get_coordinates(shapely.oriented_envelope(gpx))
        flat = kind == "flat"
        if len(env) == 5 * bi.size:  # every envelope a rectangle: ridge along the long axis (terraces: across)
            env = env.reshape(-1, 5, 2)
            e1, e2 = env[:, 1] - env[:, 0], env[:, 2] - env[:, 1]
            longer = np.hypot(*e1.T) >= np.hypot(*e2.T)
            axis = np.where((longer ^ (kind == "terrace"))[:, None], e1, e2)
            nrm = np.column_stack([-axis[:, 1], axis[:, 0]]) / np.maximum(np.hypot(*axis.T), 1e-9)[:, None]
            ctr = env[:, :4].mean(1)
            s = (cols[cc] - ctr[k, 0]) * nrm[k, 0] + (rows[rr] - ctr[k, 1]) * nrm[k, 1]
            lit = s * -(nrm[k] @ sun) > 0
            lum = np.where(np.abs(s) < 0.55, 1.14, np.where(lit, 1.07, 0.8))
        else:
            flat = np.ones(bi.size, bool)
            lum = np.ones(rr.size)
        if flat.any():
            inner = _paint_index(shapely.buffer(geoms, -0.9 / m * spec.gsd), np.flatnonzero(flat), wtf, shape) > 0
            lum = np.where(flat[k], np.where(inner[rr, cc], 1.0, 0.78), lum)
        img[:, rr, cc] = (rgb[k] * (lum * (0.95 + 0.1 * mid[rr, cc]))[:, None]).T
        veg[rr, cc] = 0.0

    grey = img.mean(0)
    extra = [0.25 * grey + 150 * veg + 12, 0.5 * img[0] + 90 * veg, 0.7 * grey + 40 * (1 - veg),
             0.6 * grey + 20 * (1 - veg)]
    chans = [grey] if spec.bands == 1 else [*img, *extra][: spec.bands]
    chans += [0.5 * grey + (110 - 6 * i) * veg for i in range(spec.bands - len(chans))]
    return np.stack(chans).astype(np.float32)


def render_window(spec: SynthSpec, truth: dict[str, gpd.GeoDataFrame], window: Window) -> np.ndarray:
    """Pixels (bands, h, w) of ``spec.dtype`` for one window; identical whatever window holds a pixel.

    A 3x3 blur needs a 1-pixel halo, painted like any other pixel, so block edges never show.
    """
    r0, c0, h, w = (int(v) for v in (window.row_off, window.col_off, window.height, window.width))
    if (r0, c0, h, w) != (window.row_off, window.col_off, window.height, window.width) or h < 1 or w < 1:
        raise ConfigError(f"render_window: window {window} must have integer offsets and a positive size")
    img = _paint(spec, truth, r0 - 1, c0 - 1, h + 2, w + 2)
    img = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
    img = 0.25 * img[:, :, :-2] + 0.5 * img[:, :, 1:-1] + 0.25 * img[:, :, 2:]
    hn = _hash(spec.seed, 5, np.arange(r0, r0 + h)[:, None], np.arange(c0, c0 + w)[None, :])
    for b in range(img.shape[0]):  # sensor noise, not blurred: 12 bits of the pixel hash per band
        img[b] += ((hn >> np.uint64(12 * (b % 5))) & np.uint64(0xFFF)).astype(np.float32) * (7 / 4095) - 3.5
    img = np.clip(img, 1, 255)
    out = {"uint8": lambda: np.rint(img).astype(np.uint8), "uint16": lambda: np.rint(img * 257).astype(np.uint16),
           "float32": lambda: (img / 255).astype(np.float32)}[spec.dtype]()
    if spec.nodata_border > 0:
        nb = spec.nodata_border
        rows = r0 + np.arange(h) + 0.5
        edge = nb * (0.5 + _grid_noise(spec.seed, 8, rows, np.array([0.5]), max(4.0 * nb, 16.0))[:, 0])
        out[:, (c0 + np.arange(w) + 0.5)[None, :] < edge[:, None]] = 0
    return out


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")


def write_scene(spec: SynthSpec, out: str | Path, truth_out: str | Path | None = None, *, block: int = 1024,
                overwrite: bool = False) -> dict[str, gpd.GeoDataFrame]:
    """Write the scene as a tiled DEFLATE GeoTIFF and its truth as a GeoPackage, block by block.

    Memory stays bounded by ``block`` (the raster is never whole in memory). Both files are written under
    temporary names in their folders and renamed into place only when both are complete.
    Default truth path: ``<out stem>_truth.gpkg`` next to ``out``. Returns the truth.
    """
    out = Path(out)
    truth_out = Path(truth_out) if truth_out is not None else out.with_name(f"{out.stem}_truth.gpkg")
    if out.resolve() == truth_out.resolve():
        raise ConfigError(f"{out}: the scene and its truth need different paths")
    if block < 1:
        raise ConfigError(f"write_scene: block must be >= 1 pixel, got {block}")
    for path in (out, truth_out):
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; use --overwrite to replace it")
    block = max(256, block // 256 * 256)  # whole GeoTIFF tiles per write
    truth = make_truth(spec)
    profile = dict(driver="GTiff", width=spec.width, height=spec.height, count=spec.bands, dtype=spec.dtype,
                   crs=rasterio.crs.CRS.from_user_input(spec.crs), transform=spec.transform, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=3 if spec.dtype == "float32" else 2,
                   interleave="pixel", BIGTIFF="IF_SAFER", nodata=0 if spec.nodata_border > 0 else None)
    if spec.bands == 3 and spec.dtype == "uint8":
        profile["photometric"] = "RGB"
    tmps = [_tmp_name(out), _tmp_name(truth_out)]
    try:
        for path in (out, truth_out):
            path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(tmps[0], "w", **profile) as dst:
            names = ("pan",) if spec.bands == 1 else _BAND_NAMES + tuple(f"band{i}" for i in range(8, 17))
            for b in range(spec.bands):
                dst.set_band_description(b + 1, names[b])
            dst.update_tags(geoseg_synth=json.dumps(asdict(spec)))
            for r in range(0, spec.height, block):
                for c in range(0, spec.width, block):
                    win = Window(c, r, min(block, spec.width - c), min(block, spec.height - r))
                    dst.write(render_window(spec, truth, win), window=win)
        geom_types = {"buildings": "Polygon", "roads": "Polygon", "road_centerlines": "LineString"}
        for layer in LAYERS:
            pyogrio.write_dataframe(truth[layer], tmps[1], layer=layer, driver="GPKG",
                                    geometry_type=geom_types[layer], promote_to_multi=False)
        os.replace(tmps[0], out)
        os.replace(tmps[1], truth_out)
    except (OSError, rasterio.errors.RasterioError, pyogrio.errors.DataSourceError,
            pyogrio.errors.DataLayerError) as err:
        raise OutputError(f"{out}: cannot write the scene ({err}); check the folder is writable") from err
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return truth

