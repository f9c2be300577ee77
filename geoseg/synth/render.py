"""Painting pixels of any window (:func:`render_window`) and rasterising vectors to classes (:func:`label_window`)."""

from __future__ import annotations

from typing import Iterable

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy import ndimage

from geoseg.errors import ConfigError
from geoseg.grid import Grid, map_points
from geoseg.synth.confusers import ON_ROAD
from geoseg.synth.model import _model
from geoseg.synth.noise import _grid_noise, _hash, _unit
from geoseg.synth.spec import SynthSpec
from geoseg.synth.terraces import HAS_NEXT, HAS_PREV, UX, UY, unit_cues


def _footprint(transform: Affine, shape: tuple[int, int]) -> shapely.Polygon:
    return Grid(transform, shape[1], shape[0]).footprint()


def _query(gdf: gpd.GeoDataFrame | None, area: shapely.Geometry) -> np.ndarray:
    """Sorted positions of features near ``area``: sorted, so overlaps paint in the same order in any window."""
    if gdf is None or len(gdf) == 0:
        return np.zeros(0, np.int64)
    return np.sort(gdf.sindex.query(area))


def _shapes(geoms: np.ndarray | list[object], values: Iterable[int]) -> list[tuple[object, int]]:
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
        found: np.ndarray | list[shapely.Geometry] = (np.asarray(gdf.geometry.values[_query(gdf, area)])
                                                      if gdf is not None and len(gdf) else [])
        geoms = [g for g in found if g is not None and not g.is_empty]
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


def _ground(mdl, noise, ptf, pbox, rows, cols, shape):  # noqa: ANN001, ANN202 (private)
    """Bare ground, soil patches and striped fields: (image, vegetation share) and the noise layers reused later."""
    look = mdl.look
    lo, mid, soil = 0.7 * noise(1, 70) + 0.3 * noise(2, 18), noise(3, 5), noise(4, 45)
    t = np.clip(lo * 0.8 + (mid - 0.5) * 0.3 + (noise(6, 1.5) - 0.5) * 0.35, 0, 1)
    a = np.clip((soil - 0.64) * 7, 0, 1)
    img = np.stack([(d + (li - d) * t) * (1 - a) + s * a * (0.88 + 0.24 * mid)
                    for d, li, s in zip(look.ground_dark, look.ground_light, look.soil)])
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
    return img, veg, lo, mid


def _shade(spec, mdl, blds, bi, geoms, ptf, pbox, wtf, shape):  # noqa: ANN001, ANN202 (private)
    """Where shadows fall: tree crowns, standing confusers and the buildings ``bi`` (their heights, the sun)."""
    m, look = spec.m_per_px, mdl.look
    shade = _paint_index(mdl.crown_shadows, np.sort(mdl.index["crown_shadows"].query(pbox)), ptf, shape) > 0
    if len(mdl.conf_shadows):
        shade |= _paint_index(mdl.conf_shadows, np.sort(mdl.index["conf_shadows"].query(pbox)), ptf, shape) > 0
    if bi.size and blds is not None:
        height = blds["height_m"].to_numpy(float)[bi] if "height_m" in blds else np.full(bi.size, 7.0)
        off, tf = mdl.sun[None, :] * (height * look.shadow_len / m)[:, None], spec.transform
        offm = np.column_stack([tf.a * off[:, 0] + tf.b * off[:, 1], tf.d * off[:, 0] + tf.e * off[:, 1]])
        ci = shapely.get_coordinates(geoms, return_index=True)[1]
        moved = shapely.transform(geoms, lambda c: c + offm[ci])
        shadows = shapely.convex_hull(shapely.union(geoms, moved))
        shade |= _paint_index(shadows, np.arange(bi.size), wtf, shape) > 0
    return shade


def _paint(spec: SynthSpec, truth: dict[str, gpd.GeoDataFrame], r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Float 0-255 image (bands, h, w) of a pixel-grid region, before blur, sensor noise and nodata."""
    mdl, m, seed = _model(spec), spec.m_per_px, spec.seed
    look = mdl.look
    rows, cols, shape = r0 + np.arange(h) + 0.5, c0 + np.arange(w) + 0.5, (h, w)
    ptf = Affine.translation(c0, r0)  # decor lives in the pixel frame
    x, y = spec.transform @ (c0, r0)  # truth lives in map coordinates; same arithmetic (so the same bits)
    wtf = Affine.translation(x - spec.transform.c, y - spec.transform.f) @ spec.transform  # as windows.transform
    pbox = shapely.box(c0, r0, c0 + w, r0 + h)

    def noise(salt: int, metres: float) -> np.ndarray:
        return _grid_noise(seed, salt, rows, cols, max(metres / m, 1.0))

    img, veg, lo, mid = _ground(mdl, noise, ptf, pbox, rows, cols, shape)
    lab = label_window(truth, wtf, shape)
    road = lab == 2
    g = look.road + 36 * lo[road] + 14 * mid[road]
    img[:, road] = np.stack([g * look.road_tint[0], g * look.road_tint[1], g * look.road_tint[2]])
    veg[road] = 0.02
    idx = np.sort(mdl.index["marks"].query(pbox))
    marks = (_paint_index(mdl.marks, idx, ptf, shape, all_touched=True) > 0) & road
    img[:, marks] = np.array(look.marks)[:, None]
    if len(mdl.confusers):
        _paint_confusers(mdl, img, veg, lab, ptf, pbox, rows, cols, mid)

    blds = truth.get("buildings")
    bi = _query(blds, shapely.buffer(_footprint(wtf, shape), max(40.0, 20 * look.shadow_len + 5) / m * spec.gsd))
    geoms = np.asarray(blds.geometry.values[bi]) if bi.size and blds is not None else np.empty(0, object)
    shade = _shade(spec, mdl, blds, bi, geoms, ptf, pbox, wtf, shape)
    img[:, shade] *= np.array(look.shadow)[:, None]
    veg[shade] *= 0.6

    crowns = np.sort(mdl.index["crowns"].query(pbox))
    _paint_crowns(mdl, img, veg, crowns, ptf, rows, cols, noise(7, 1.2))
    if (lab == 1).any() and bi.size:
        _paint_roofs(spec, blds, bi, geoms, img, veg, lab == 1, wtf, rows, cols, mid)
        over = crowns[mdl.tree_over[crowns]]
        if over.size:  # crowns that overhang a roof go over it (the label stays building: vectors decide)
            _paint_crowns(mdl, img, veg, over, ptf, rows, cols, noise(7, 1.2))

    grey = img.mean(0)
    extra = [0.25 * grey + 150 * veg + 12, 0.5 * img[0] + 90 * veg, 0.7 * grey + 40 * (1 - veg),
             0.6 * grey + 20 * (1 - veg)]
    chans = [grey] if spec.bands == 1 else [*img, *extra][: spec.bands]
    chans += [0.5 * grey + (110 - 6 * i) * veg for i in range(spec.bands - len(chans))]
    return np.stack(chans).astype(np.float32)


def _paint_crowns(mdl, img, veg, idx, ptf, rows, cols, texture) -> None:  # noqa: ANN001 (private)
    """Tree crowns ``idx``: lit on the sun side, darker at the rim, leafy texture."""
    sel = _paint_index(mdl.crowns, idx, ptf, img.shape[1:])
    if idx.size and (sel > 0).any():
        k = idx[sel[sel > 0] - 1]
        rr, cc = np.nonzero(sel)
        x, y, r = mdl.tree_xyr[k].T
        dx, dy = cols[cc] - x, rows[rr] - y
        sun = mdl.sun
        lum = (0.8 - 0.3 * (dx * sun[0] + dy * sun[1]) / r - 0.22 * (dx * dx + dy * dy) / (r * r)
               + 0.5 * (texture[rr, cc] - 0.5))
        img[:, rr, cc] = (mdl.tree_rgb[k] * lum[:, None]).T
        veg[rr, cc] = 1.0


def _paint_confusers(mdl, img, veg, lab, ptf, pbox, rows, cols, mid) -> None:  # noqa: ANN001 (private)
    """Background surfaces, only on background pixels (cars also on roads): the labels never change."""
    idx = np.sort(mdl.index["confusers"].query(pbox))
    if not idx.size:
        return
    sel = _paint_index(mdl.confusers, idx, ptf, img.shape[1:])
    k = np.where(sel > 0, idx[np.maximum(sel - 1, 0)], -1)
    allowed = (sel > 0) & ((lab == 0) | ((lab == 2) & (mdl.conf_kind[np.maximum(k, 0)] == ON_ROAD)))
    rr, cc = np.nonzero(allowed)
    k = k[rr, cc]
    st = mdl.conf_stripe[k]
    ph = (cols[cc] * st[:, 0] + rows[rr] * st[:, 1]) / np.maximum(st[:, 2], 1e-6)
    line = np.abs(ph - np.floor(ph) - 0.5) * 2 > 0.8
    lum = (1 + st[:, 3] * line) * (0.92 + 0.16 * mid[rr, cc])
    img[:, rr, cc] = (mdl.conf_rgb[k] * lum[:, None]).T
    veg[rr, cc] = 0.02


def _roof_faces(look, kind, ids, seed, env, k, rr, cc, rows, cols, sun):  # noqa: ANN001, ANN202 (private)
    """Per-pixel luminance of pitched roofs: gables (ridge along the long axis; terraces across), hips, solar."""
    e1, e2 = env[:, 1] - env[:, 0], env[:, 2] - env[:, 1]
    longer = np.hypot(*e1.T) >= np.hypot(*e2.T)
    across = (longer ^ (kind == "terrace"))[:, None]
    axis, other = np.where(across, e1, e2), np.where(across, e2, e1)
    nrm = np.column_stack([-axis[:, 1], axis[:, 0]]) / np.maximum(np.hypot(*axis.T), 1e-9)[:, None]
    ctr = env[:, :4].mean(1)
    s = (cols[cc] - ctr[k, 0]) * nrm[k, 0] + (rows[rr] - ctr[k, 1]) * nrm[k, 1]
    lit = s * -(nrm[k] @ sun) > 0
    c = look.roof_contrast
    hi, up, down = (1.14, 1.07, 0.8) if c == 1.0 else (1 + 0.14 * c, 1 + 0.07 * c, 1 - 0.2 * c)
    lum = np.where(np.abs(s) < 0.55, hi, np.where(lit, up, down))
    if look.hip_share > 0 or look.solar_share > 0:
        u = axis / np.maximum(np.hypot(*axis.T), 1e-9)[:, None]
        t = (cols[cc] - ctr[k, 0]) * u[k, 0] + (rows[rr] - ctr[k, 1]) * u[k, 1]
        half_l, half_w = np.hypot(*axis.T)[k] / 2, np.hypot(*other.T)[k] / 2
        draw = _unit(_hash(seed, 13, ids))
        hip = (draw < look.hip_share) & (kind == "house")
        end = hip[k] & (half_l - np.abs(t) < half_w - np.abs(s))
        lum = np.where(end, np.where(t * -(u[k] @ sun) > 0, up, down), lum)
        solar = ((1 - draw) < look.solar_share) & (kind != "flat")
        panel = solar[k] & ~end & (s > 1.0) & (s < half_w - 1.0) & (np.abs(t) < half_l - 1.5)
        return lum, panel
    return lum, np.zeros(lum.shape, bool)


def _terrace_lum(cues, ids, known, env, k, rr, cc, rows, cols, lum):  # noqa: ANN001, ANN202 (private)
    """Luminance with the party-wall cues of terraced units (geoseg.synth.terraces), in the unit's row frame."""
    cue = cues[np.where(known, ids, 0)]
    on = (cue[k, HAS_PREV] + cue[k, HAS_NEXT]) > 0
    if not on.any():
        return lum
    u = cue[:, [UX, UY]]
    ctr = env[:, :4].mean(1)
    half = np.abs(np.einsum("nij,nj->ni", env[:, :4] - ctr[:, None], u)).max(1)
    p, q = rr[on], cc[on]
    kk = k[on]
    dx, dy = cols[q] - ctr[kk, 0], rows[p] - ctr[kk, 1]
    t = dx * u[kk, 0] + dy * u[kk, 1]
    s = -dx * u[kk, 1] + dy * u[kk, 0]
    lum = lum.copy()
    lum[on] = unit_cues(cue[kk], t, s, half[kk], lum[on])
    return lum


def _paint_roofs(spec, blds, bi, geoms, img, veg, bld, wtf, rows, cols, mid) -> None:  # noqa: ANN001 (private)
    """Roofs of the buildings ``bi`` (positions in the truth layer) on their label pixels."""
    mdl, m, seed = _model(spec), spec.m_per_px, spec.seed
    shape = img.shape[1:]
    sel = _paint_index(geoms, np.arange(bi.size), wtf, shape)
    rr, cc = np.nonzero(bld & (sel > 0))
    k = sel[rr, cc] - 1
    ids = blds["id"].to_numpy(np.int64)[bi] if "id" in blds else bi + 1
    known = (ids >= 1) & (ids < len(mdl.roof_rgb))
    roofs = np.asarray(mdl.look.roofs, float)
    rgb = np.where(known[:, None], mdl.roof_rgb[np.where(known, ids, 0)],
                   roofs[_hash(seed, 9, ids) % np.uint64(len(roofs))])
    kind = blds["kind"].to_numpy(str)[bi] if "kind" in blds else np.where(
        shapely.area(geoms) * (m / spec.gsd) ** 2 > 500, "flat", "house")
    inv = ~spec.transform
    gpx = shapely.transform(geoms, lambda c: map_points(inv, c))
    env = shapely.get_coordinates(shapely.oriented_envelope(gpx))
    flat = kind == "flat"
    panel = np.zeros(rr.size, bool)
    if len(env) == 5 * bi.size:  # every envelope a rectangle
        lum, panel = _roof_faces(mdl.look, kind, ids, seed, env.reshape(-1, 5, 2), k, rr, cc, rows, cols, mdl.sun)
        lum = _terrace_lum(mdl.terrace, ids, known, env.reshape(-1, 5, 2), k, rr, cc, rows, cols, lum)
    else:
        flat = np.ones(bi.size, bool)
        lum = np.ones(rr.size)
    if flat.any():
        inner = _paint_index(shapely.buffer(geoms, -0.9 / m * spec.gsd), np.flatnonzero(flat), wtf, shape) > 0
        lum = np.where(flat[k], np.where(inner[rr, cc], 1.0, 0.78), lum)
    colour = np.where(panel[:, None], np.array([[44.0, 52.0, 78.0]]), rgb[k])
    img[:, rr, cc] = (colour * (lum * (0.95 + 0.1 * mid[rr, cc]))[:, None]).T
    veg[rr, cc] = 0.0


def _atmosphere(look, img: np.ndarray) -> None:  # noqa: ANN001 (private)
    """White balance and haze on the visible bands (in place); the classic look has neither."""
    vis = min(3, img.shape[0])
    if look.gain != (1.0, 1.0, 1.0):
        img[:vis] *= np.asarray(look.gain, np.float32)[:vis, None, None]
    if look.haze > 0:
        img[:vis] = img[:vis] * (1 - look.haze) + look.haze * np.asarray(look.haze_rgb, np.float32)[:vis, None, None]


def render_window(spec: SynthSpec, truth: dict[str, gpd.GeoDataFrame], window: Window) -> np.ndarray:
    """Pixels (bands, h, w) of ``spec.dtype`` for one window; identical whatever window holds a pixel.

    A 3x3 blur needs a 1-pixel halo, painted like any other pixel, so block edges never show.
    """
    r0, c0, h, w = (int(v) for v in (window.row_off, window.col_off, window.height, window.width))
    if (r0, c0, h, w) != (window.row_off, window.col_off, window.height, window.width) or h < 1 or w < 1:
        raise ConfigError(f"render_window: window {window} must have integer offsets and a positive size")
    look = _model(spec).look
    radius = int(3 * look.blur_px + 0.5) if look.blur_px > 0 else 0  # scipy's kernel radius at truncate=3
    pad = 1 + radius
    img = _paint(spec, truth, r0 - pad, c0 - pad, h + 2 * pad, w + 2 * pad)
    _atmosphere(look, img)
    img = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
    img = 0.25 * img[:, :, :-2] + 0.5 * img[:, :, 1:-1] + 0.25 * img[:, :, 2:]
    if radius:  # optics / resampling softness; the halo holds the whole kernel, so windows still agree
        img = ndimage.gaussian_filter(img, (0, look.blur_px, look.blur_px), truncate=3.0)[:, radius:-radius,
                                                                                           radius:-radius]
    hn = _hash(spec.seed, 5, np.arange(r0, r0 + h)[:, None], np.arange(c0, c0 + w)[None, :])
    for b in range(img.shape[0]):  # sensor noise, not blurred: 12 bits of the pixel hash per band
        img[b] += ((hn >> np.uint64(12 * (b % 5))) & np.uint64(0xFFF)).astype(np.float32) * (look.noise / 4095) \
            - look.noise / 2
    img = np.clip(img, 1, 255)
    out = {"uint8": lambda: np.rint(img).astype(np.uint8), "uint16": lambda: np.rint(img * 257).astype(np.uint16),
           "float32": lambda: (img / 255).astype(np.float32)}[spec.dtype]()
    if spec.nodata_border > 0:
        nb = spec.nodata_border
        rows = r0 + np.arange(h) + 0.5
        edge = nb * (0.5 + _grid_noise(spec.seed, 8, rows, np.array([0.5]), max(4.0 * nb, 16.0))[:, 0])
        out[:, (c0 + np.arange(w) + 0.5)[None, :] < edge[:, None]] = 0
    return out
