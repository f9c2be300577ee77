"""The one line a run ends with: the scene's area, then per layer what was found (count and area, or length)."""

from __future__ import annotations

from typing import Any


def layer_measure(frame: Any, geometry: str) -> float:
    """Metres of a line layer's features (``length_m``) or square metres of a polygon layer's (``area_m2``)."""
    column = "length_m" if geometry == "LineString" else "area_m2"
    return float(frame[column].sum()) if len(frame) and column in frame else 0.0


def _area(m2: float) -> str:
    return f"{m2 / 1e6:,.3f} km²" if m2 >= 1e5 else f"{m2:,.0f} m²"


def _layer(name: str, geometry: str, count: int, measure: float) -> str:
    if geometry == "LineString":  # a network: its length says what was found, not its piece count
        return f"{name.replace('_', ' ')} {measure / 1e3:,.2f} km"
    return f"{count:,} {name} ({_area(measure)})"


def found(counts: dict[str, int], measures: dict[str, float], geometry: dict[str, str]) -> str:
    """``42 buildings (3,120 m²), road centerlines 1.84 km, 3 roads (5,400 m²)``: a network's centerlines lead
    its class's part, as its polygons are mostly one connected piece."""
    names = list(counts)
    for i in range(len(names) - 1):  # layers come as (polygons, centerlines) per network class: swap them
        if geometry.get(names[i + 1]) == "LineString" and geometry.get(names[i]) != "LineString":
            names[i], names[i + 1] = names[i + 1], names[i]
    return ", ".join(_layer(n, geometry.get(n, "Polygon"), counts[n], measures.get(n, 0.0)) for n in names)


def summary_line(scene_km2: float, counts: dict[str, int], measures: dict[str, float],
                 geometry: dict[str, str]) -> str:
    """``scene 0.262 km²: <found>``."""
    text = found(counts, measures, geometry) if counts else ""
    return f"scene {scene_km2:.3f} km²" + (f": {text}" if text else "")
