"""One scene's model: the layout assembled into truth vectors (map coordinates) and private decor, cached per spec."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from geoseg.grid import map_points
from geoseg.synth.confusers import place_confusers
from geoseg.synth.layout import _FIELD_VEG, _crown_polys, _fields, _place_buildings, _road_lines, _roof_colours, _trees
from geoseg.synth.looks import Look, resolve_look
from geoseg.synth.spec import SynthSpec
from geoseg.synth.terraces import terrace_cues


@dataclass
class _Model:
    """One scene's layout: the truth in map coordinates and the private decor in pixel coordinates."""

    truth: dict[str, gpd.GeoDataFrame]
    roof_rgb: np.ndarray  # (n_buildings + 1, 3), indexed by building id
    terrace: np.ndarray  # (n_buildings + 1, 10) terraced-unit cues by building id (geoseg.synth.terraces)
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
    look: Look
    tree_over: np.ndarray  # crowns that overhang a roof (painted over it)
    confusers: np.ndarray  # pixel-frame polygons of background surfaces (see geoseg.synth.confusers)
    conf_kind: np.ndarray
    conf_rgb: np.ndarray
    conf_stripe: np.ndarray  # (n, 4): direction, period in pixels, contrast
    conf_shadows: np.ndarray  # shadows of the confusers that stand up (containers, cars)

    @functools.cached_property
    def index(self) -> dict[str, shapely.STRtree]:
        keys = ("fields", "crowns", "crown_shadows", "marks", "confusers", "conf_shadows")
        return {k: shapely.STRtree(getattr(self, k)) for k in keys}


def _map(geoms: np.ndarray, spec: SynthSpec, scale: float) -> np.ndarray:
    """Local metres -> pixel frame (scale=1/m) -> map coordinates with the scene transform."""
    t = spec.transform

    return shapely.transform(np.asarray(geoms, dtype=object), lambda c: map_points(t, c * scale))


def _roads(rng: np.random.Generator, spec: SynthSpec, w: float, h: float) -> tuple[list, list, list, shapely.STRtree]:
    """Road lines, their centerline and polygon parts inside the frame (geometry, road id, width) and the
    keep-out tree: each centerline segment buffered (its union is the road + 1 m), so queries stay local."""
    frame = shapely.box(0, 0, w, h)
    roads_u = _road_lines(rng, w, h, spec.density) if spec.density > 0 else []
    cl, rp = [], []
    for rid, (line, width) in enumerate(roads_u):
        cl += [(g, rid, width) for g in shapely.get_parts(shapely.intersection(line, frame)) if g.length > 0.5]
        poly = shapely.intersection(shapely.buffer(line, width / 2, cap_style="flat"), frame)
        rp += [(g, rid, width) for g in shapely.get_parts(poly) if g.area > 1]
    segs = [(np.stack([c[:-1], c[1:]], 1), np.full(len(c) - 1, wd / 2 + 1.0))
            for c, wd in ((shapely.get_coordinates(ln), wd) for ln, wd in roads_u)]
    road_tree = shapely.STRtree(shapely.buffer(shapely.linestrings(np.concatenate([s for s, _ in segs])),
                                               np.concatenate([r for _, r in segs])) if segs else [])
    return roads_u, cl, rp, road_tree


def _marks(rng: np.random.Generator, cl: list) -> list:
    """Dashed lane marks on the wider roads (local metres)."""
    marks = []
    for g, _, width in cl:
        if width >= 8:
            d = np.arange(rng.uniform(0, 9), g.length - 3, 9.0)
            a = shapely.get_coordinates(shapely.line_interpolate_point(g, d))
            b = shapely.get_coordinates(shapely.line_interpolate_point(g, d + 3))
            marks += list(shapely.buffer(shapely.linestrings(np.stack([a, b], 1)), 0.22, cap_style="flat"))
    return marks


def _truth(spec: SynthSpec, blds: list, heights: np.ndarray, rp: list, cl: list) -> dict[str, gpd.GeoDataFrame]:
    crs, m = CRS.from_user_input(spec.crs), spec.m_per_px

    def gdf(geoms: list, cls: str, cols: dict) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame({**cols, "class": [cls] * len(geoms)},
                                geometry=gpd.GeoSeries(_map(np.array(geoms, dtype=object), spec, 1 / m)), crs=crs)

    return {
        "buildings": gdf([b[0] for b in blds], "building", {
            "id": np.arange(1, len(blds) + 1, dtype=np.int64), "kind": [b[1] for b in blds],
            "height_m": np.round(heights, 1)}),
        "roads": gdf([g for g, _, _ in rp], "road", {
            "road_id": np.array([r for _, r, _ in rp], np.int64), "width_m": np.round([wd for *_, wd in rp], 1)}),
        "road_centerlines": gdf([g for g, _, _ in cl], "road", {
            "road_id": np.array([r for _, r, _ in cl], np.int64), "width_m": np.round([wd for *_, wd in cl], 1)}),
    }


def _confuser_decor(spec: SynthSpec, look: Look, road_tree: shapely.STRtree, bgeom: np.ndarray, roads_u: list,
                    sun: np.ndarray, w: float, h: float) -> dict:
    """The confusers in the pixel frame, with the shadows of those that stand up (containers, cars)."""
    m = spec.m_per_px
    conf = place_confusers(spec.seed, look, road_tree, bgeom, roads_u, w, h)
    cgeom = shapely.transform(np.array(conf.geoms, dtype=object), lambda c: c / m)
    tall = np.flatnonzero(np.array(conf.height) > 0)
    lift = sun[None, :] * (np.array(conf.height)[tall] * look.shadow_len / m)[:, None]  # (0, 2) when none is tall
    cshadow = np.empty(0, object)
    if tall.size:
        ci = shapely.get_coordinates(cgeom[tall], return_index=True)[1]
        moved = shapely.transform(cgeom[tall], lambda c: c + lift[ci])
        cshadow = shapely.convex_hull(shapely.union(cgeom[tall], moved))
    return {"confusers": cgeom, "conf_kind": np.array(conf.kind, np.int64),
            "conf_rgb": np.array(conf.rgb, float).reshape(-1, 3),
            "conf_stripe": np.array(conf.stripe, float).reshape(-1, 4) / [1, 1, m, 1], "conf_shadows": cshadow}


@functools.lru_cache(maxsize=8)
def _model(spec: SynthSpec) -> _Model:
    rng = np.random.default_rng([spec.seed, 0x5E])
    m = spec.m_per_px
    w, h = spec.width * m, spec.height * m
    roads_u, cl, rp, road_tree = _roads(rng, spec, w, h)
    blds = _place_buildings(rng, spec, roads_u, road_tree, w, h)
    bgeom = np.array([b[0] for b in blds], dtype=object)
    kinds = [b[1] for b in blds]
    fpolys, fmeta = _fields(rng, roads_u, road_tree, bgeom, spec, w, h)
    fmeta = np.array(fmeta).reshape(-1, 4)
    parks = [p for p, mt in zip(fpolys, fmeta) if mt[3] == 4]
    look = resolve_look(spec.look, spec.seed)
    xyr, crowns, over = _trees(rng, spec, roads_u, road_tree, bgeom, parks, w, h, look.tree_over_roof)
    az = rng.uniform(0, 2 * np.pi)
    sun = np.array([math.cos(az), math.sin(az)])
    marks = _marks(rng, cl)
    decor = _confuser_decor(spec, look, road_tree, bgeom, roads_u, sun, w, h)
    roof_rgb = _roof_colours(rng, kinds, look)
    heights = np.round([b[2] for b in blds], 1)
    cues = terrace_cues(spec.seed, blds, heights, roof_rgb, look, sun, m)
    px = xyr / m
    fields_rgb = np.asarray(look.fields, float)
    return _Model(
        truth=_truth(spec, blds, heights, rp, cl), roof_rgb=roof_rgb, sun=sun, terrace=cues.unit,
        fields=shapely.transform(np.array(fpolys, dtype=object), lambda c: c / m),
        field_dir=fmeta[:, :2], field_period=fmeta[:, 2] / m, field_rgb=fields_rgb[fmeta[:, 3].astype(int)],
        field_veg=_FIELD_VEG[fmeta[:, 3].astype(int)],
        crowns=shapely.transform(crowns, lambda c: c / m),
        crown_shadows=_crown_polys(rng, px, sun * px[:, 2:3] * (1.6 * (look.shadow_len / 0.6))),
        tree_xyr=px, tree_rgb=np.column_stack([rng.uniform(40, 72, len(px)), rng.uniform(70, 102, len(px)),
                                               rng.uniform(34, 52, len(px))]) * np.asarray(look.tree_tint),
        marks=shapely.transform(np.array(marks, dtype=object), lambda c: c / m),
        look=look, tree_over=over, **decor,
    )


def make_truth(spec: SynthSpec) -> dict[str, gpd.GeoDataFrame]:
    """The scene's exact vectors in ``spec.crs``: layers buildings, roads, road_centerlines (fresh copies)."""
    return {k: v.copy() for k, v in _model(spec).truth.items()}
