"""What makes the units of a terraced row visible from above: party-wall parapets, roof steps with their small
shadows, per-unit roof tone and material, chimneys astride the party walls.

Real rows show where one house ends and the next begins, strongly on some streets and barely on others, so every
row draws its own cue strength. The draws use their own generator, so the layout (and the truth) of a seed is the
one it was before these cues; only unit heights (roof steps) and roof colours change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.synth.looks import Look

# columns of TerraceCues.unit, one row per building id (0 and non-terraced buildings: no cue)
UX, UY, WALL_LUM, WALL_PX, STEP_PREV, STEP_NEXT, CHIM_PX, CHIM_OFF, HAS_PREV, HAS_NEXT = range(10)


@dataclass
class TerraceCues:
    """Per building id: row direction (pixel frame), wall line, step shadows, chimneys (see the column names)."""

    unit: np.ndarray  # (n_buildings + 1, 10)


def _rows(blds: list[tuple]) -> list[np.ndarray]:
    """Building positions (0-based) of each terraced row of two or more units, in order along the row."""
    rows: dict[int, list[int]] = {}
    for i, (_, kind, _, gid, _) in enumerate(blds):
        if kind == "terrace":
            rows.setdefault(gid, []).append(i)
    return [np.array(r) for r in rows.values() if len(r) > 1]


def _row_colours(rng: np.random.Generator, rgb: np.ndarray, ids: np.ndarray, strength: float,
                 look: Look) -> None:
    """Per-unit tone (a wider spread on strong rows) and now and then another roofing material (in place)."""
    spread = 0.03 + 0.12 * strength
    rgb[ids] = rgb[ids] * (1 + rng.normal(0, spread, (ids.size, 1))) + rng.normal(0, 4 + 8 * strength, (ids.size, 3))
    other = rng.random(ids.size) < 0.05 + 0.25 * strength
    if other.any():
        roofs = np.asarray(look.roofs, float)
        rgb[ids[other]] = roofs[rng.integers(len(roofs), size=int(other.sum()))] + rng.uniform(-10, 10, (
            int(other.sum()), 3))
    np.clip(rgb, 20, 240, out=rgb)


def terrace_cues(seed: int, blds: list[tuple], heights: np.ndarray, rgb: np.ndarray, look: Look, sun: np.ndarray,
                 m: float) -> TerraceCues:
    """Cues of every terraced row; ``heights`` (metres, by position) and ``rgb`` (by id) are changed in place."""
    rng = np.random.default_rng([seed, 0x7E7])
    unit = np.zeros((len(blds) + 1, 10))
    unit[:, WALL_LUM] = 1.0
    for row in _rows(blds):
        strength = rng.uniform(0, 1)
        ids = row + 1
        if rng.random() < 0.5:  # stepped roofs: units at their own height along a slope or at random
            heights[row] = np.round(heights[row] + rng.uniform(-1, 1, row.size) * (0.3 + 1.2 * strength), 1)
        _row_colours(rng, rgb, ids, strength, look)
        u = np.asarray(blds[row[0]][4], float)
        unit[ids, UX], unit[ids, UY] = u[0], u[1]
        unit[ids[1:], HAS_PREV], unit[ids[:-1], HAS_NEXT] = 1, 1
        if rng.random() < 0.8:  # parapets or flashing along the party walls: dark or light lines
            dark = rng.random() < 0.6
            unit[ids, WALL_LUM] = 1 - (0.12 + 0.4 * strength) if dark else 1 + (0.08 + 0.3 * strength)
            unit[ids, WALL_PX] = rng.uniform(0.2, 0.45) / m  # half the line's width, each side of the wall
        along = float(sun @ u) * look.shadow_len / m  # shadow length per metre of height difference, along u
        dh = np.diff(heights[row])  # next unit minus this one
        if along > 0:  # shadows fall towards +u: a higher predecessor shades this unit's -u side
            unit[ids[1:], STEP_PREV] = np.maximum(-dh, 0) * along
        else:
            unit[ids[:-1], STEP_NEXT] = np.maximum(dh, 0) * -along
        if rng.random() < 0.45:  # chimney stacks astride the party walls, all at one depth along the row
            unit[ids, CHIM_PX] = rng.uniform(0.7, 1.2) / m
            unit[ids, CHIM_OFF] = rng.uniform(-0.3, 0.3) * rng.uniform(6, 9) / m
    return TerraceCues(unit=unit)


def unit_cues(cue: np.ndarray, t: np.ndarray, s: np.ndarray, half: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """Roof luminance of terraced pixels with their row's cues: ``cue`` rows per pixel, ``t`` the position along
    the row from the unit's centre, ``s`` across it (both pixels, ``s`` along the row's left normal) and
    ``half`` the unit's half width along the row."""
    to_prev, to_next = t + half, half - t  # distance to the -u and +u walls
    prev, nxt = cue[:, HAS_PREV] > 0, cue[:, HAS_NEXT] > 0
    wall = (prev & (to_prev < cue[:, WALL_PX])) | (nxt & (to_next < cue[:, WALL_PX]))
    lum = np.where(wall, lum * cue[:, WALL_LUM], lum)
    step = (to_prev < cue[:, STEP_PREV]) | (to_next < cue[:, STEP_NEXT])
    lum = np.where(step, lum * 0.62, lum)
    near = np.minimum(np.where(prev, to_prev, np.inf), np.where(nxt, to_next, np.inf))
    chim = (cue[:, CHIM_PX] > 0) & (near < cue[:, CHIM_PX] / 2) & (np.abs(s - cue[:, CHIM_OFF]) < cue[:, CHIM_PX] / 2)
    return np.where(chim, 0.55 + 0.25 * (s > cue[:, CHIM_OFF]), lum)
