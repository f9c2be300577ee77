"""Looks: the appearance of a synthetic scene (palettes, roofs, sun, haze, blur, sensor noise, confusers).

The layout (roads, buildings, trees) depends only on the seed; a look only changes how it is painted, so one
seed under two looks has the same truth. Named looks come in two sets:

* ``TRAIN_LOOKS``: what the default model's recipe draws from (``look: random`` blends two of them and jitters
  every parameter, per seed);
* ``HELD_OUT_LOOKS``: palettes and conditions that no training recipe draws from, so a model can be scored on
  imagery whose look it never saw.

``classic`` is the original geoseg look (no confusers, no haze): the sample tiles and old seeds stay byte-identical.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

_RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """Everything a look sets; colours are 0-255 RGB, lengths in metres unless named ``_px``."""

    name: str
    ground_dark: _RGB = (62, 90, 42)
    ground_light: _RGB = (128, 140, 80)
    soil: _RGB = (152, 128, 98)
    fields: tuple[_RGB, ...] = ((98, 132, 58), (188, 170, 104), (128, 102, 76), (160, 160, 110), (112, 146, 72))
    roofs: tuple[_RGB, ...] = ((165, 78, 58), (185, 105, 70), (120, 86, 68), (112, 112, 118), (205, 204, 198),
                               (64, 64, 70))
    roof_p: tuple[float, ...] = (0.28, 0.14, 0.18, 0.18, 0.1, 0.12)
    flats: tuple[_RGB, ...] = ((150, 150, 146), (196, 196, 190), (92, 92, 98), (128, 122, 112))
    road: float = 90.0                # asphalt grey at the dark end
    road_tint: _RGB = (1.0, 1.0, 1.04)
    marks: _RGB = (212, 212, 204)
    tree_tint: _RGB = (1.0, 1.0, 1.0)
    shadow: _RGB = (0.42, 0.46, 0.58)  # shadowed pixels are multiplied by this
    shadow_len: float = 0.6           # shadow length per metre of height: 1 / tan(sun elevation)
    roof_contrast: float = 1.0        # lit/shaded roof-face contrast (metal roofs > 1, matte < 1)
    hip_share: float = 0.0            # houses with hip roofs (four faces) instead of gables
    solar_share: float = 0.0          # gable roofs with a solar array on one face
    tree_over_roof: float = 0.0       # share of crowns near buildings that are kept, overhanging the roof
    haze: float = 0.0                 # blend towards ``haze_rgb``
    haze_rgb: _RGB = (190, 196, 206)
    gain: _RGB = (1.0, 1.0, 1.0)      # sensor/white-balance gain per band
    blur_px: float = 0.0              # extra Gaussian blur (sigma, pixels) on top of the 3x3 binomial
    noise: float = 7.0                # peak-to-peak sensor noise, 0-255 units
    confusers: float = 0.0            # density of man-made background: parking, plazas, pools, containers, paths
    pool_rgb: _RGB = (70, 160, 200)
    plaza_rgb: _RGB = (188, 180, 166)
    path_rgb: _RGB = (170, 156, 130)


CLASSIC = Look("classic")

TRAIN_LOOKS: dict[str, Look] = {look.name: look for look in (
    dataclasses.replace(CLASSIC, name="temperate", confusers=1.0, hip_share=0.3, solar_share=0.1, tree_over_roof=0.2,
                        shadow_len=0.9, noise=8.0),
    Look("mediterranean", ground_dark=(96, 98, 58), ground_light=(166, 150, 104), soil=(176, 146, 108),
         fields=((150, 140, 80), (196, 176, 120), (140, 110, 80), (120, 130, 70), (176, 160, 100)),
         roofs=((190, 96, 64), (206, 120, 80), (176, 80, 60), (220, 214, 200), (150, 90, 70)),
         roof_p=(0.3, 0.25, 0.2, 0.15, 0.1), flats=((214, 210, 198), (184, 176, 160), (150, 146, 138)),
         road=100.0, shadow=(0.45, 0.45, 0.55), shadow_len=0.45, hip_share=0.5, confusers=1.2, haze=0.05,
         noise=6.0, pool_rgb=(60, 170, 210)),
    Look("greyscale-suburb", ground_dark=(70, 86, 60), ground_light=(120, 128, 100), soil=(130, 120, 108),
         roofs=((90, 90, 96), (120, 120, 126), (70, 72, 78), (150, 148, 144), (110, 100, 96)),
         roof_p=(0.3, 0.25, 0.2, 0.15, 0.1), flats=((140, 140, 140), (170, 170, 168), (100, 100, 104)),
         road=80.0, shadow=(0.5, 0.52, 0.6), shadow_len=1.2, confusers=1.0, haze=0.12, blur_px=0.5, noise=10.0,
         solar_share=0.2, tree_over_roof=0.3),
    Look("autumn", ground_dark=(84, 80, 44), ground_light=(150, 136, 78), soil=(140, 110, 80),
         fields=((140, 120, 60), (170, 140, 80), (110, 86, 60), (150, 150, 96), (120, 120, 60)),
         roofs=((150, 70, 56), (100, 70, 60), (130, 130, 134), (60, 60, 66), (170, 110, 80)),
         roof_p=(0.3, 0.2, 0.2, 0.15, 0.15), tree_tint=(1.6, 1.1, 0.8), shadow_len=1.6, roof_contrast=1.2,
         confusers=0.8, noise=9.0, haze=0.08, tree_over_roof=0.3),
    Look("dry-grass", ground_dark=(110, 104, 62), ground_light=(180, 166, 112), soil=(186, 160, 120),
         fields=((190, 170, 110), (160, 150, 90), (200, 186, 140), (140, 120, 80), (120, 130, 70)),
         flats=((200, 200, 196), (170, 166, 156), (120, 120, 124)), road=96.0, shadow_len=0.7, confusers=1.3,
         tree_tint=(1.1, 1.0, 0.9), noise=7.0, blur_px=0.8, hip_share=0.3),
)}

HELD_OUT_LOOKS: dict[str, Look] = {look.name: look for look in (
    Look("arid", ground_dark=(170, 140, 100), ground_light=(214, 190, 150), soil=(200, 160, 116),
         fields=((200, 170, 120), (180, 150, 100), (150, 130, 90), (206, 186, 146), (130, 130, 80)),
         roofs=((226, 220, 206), (200, 186, 160), (180, 120, 90), (150, 140, 130), (236, 234, 228)),
         roof_p=(0.35, 0.25, 0.15, 0.15, 0.1), flats=((230, 226, 214), (206, 196, 176), (170, 164, 150)),
         road=110.0, road_tint=(1.04, 1.0, 0.96), tree_tint=(0.9, 0.9, 0.8), shadow=(0.4, 0.38, 0.45),
         shadow_len=0.35, hip_share=0.1, confusers=1.2, haze=0.15, haze_rgb=(220, 200, 170), noise=8.0,
         pool_rgb=(80, 190, 220)),
    Look("nordic", ground_dark=(40, 60, 40), ground_light=(90, 110, 70), soil=(100, 90, 76),
         fields=((80, 110, 60), (130, 130, 90), (90, 80, 60), (110, 120, 80), (70, 100, 56)),
         roofs=((50, 50, 56), (80, 40, 36), (40, 60, 70), (140, 50, 40), (110, 110, 110)),
         roof_p=(0.3, 0.2, 0.15, 0.2, 0.15), flats=((80, 80, 84), (120, 120, 118), (60, 60, 66)),
         road=70.0, tree_tint=(0.7, 0.8, 0.8), shadow=(0.35, 0.4, 0.55), shadow_len=2.2, roof_contrast=1.3,
         hip_share=0.2, solar_share=0.15, tree_over_roof=0.3, confusers=0.9, haze=0.2, haze_rgb=(170, 184, 204),
         gain=(0.95, 1.0, 1.08), blur_px=0.6, noise=12.0),
    Look("tropical", ground_dark=(40, 100, 40), ground_light=(100, 170, 70), soil=(170, 100, 70),
         fields=((80, 160, 60), (140, 170, 80), (160, 100, 70), (100, 150, 70), (60, 140, 60)),
         roofs=((60, 110, 170), (200, 60, 50), (60, 150, 140), (210, 210, 210), (170, 120, 60)),
         roof_p=(0.2, 0.25, 0.2, 0.2, 0.15), flats=((220, 220, 220), (160, 170, 180), (120, 130, 140)),
         road=95.0, road_tint=(1.0, 0.98, 0.96), tree_tint=(0.8, 1.2, 0.8), shadow=(0.4, 0.45, 0.5),
         shadow_len=0.5, roof_contrast=1.4, tree_over_roof=0.4, confusers=1.5, haze=0.1, haze_rgb=(200, 210, 210),
         gain=(1.05, 1.0, 0.95), noise=9.0, pool_rgb=(50, 180, 210)),
)}

LOOKS = {"classic": CLASSIC, **TRAIN_LOOKS, **HELD_OUT_LOOKS}
LOOK_NAMES = (*LOOKS, "random")


def _jitter_rgb(rng: np.random.Generator, rgb: tuple, spread: float) -> tuple:
    arr = np.asarray(rgb, float)
    out = np.clip(arr * rng.uniform(1 - spread, 1 + spread, arr.shape), 8, 245)
    return tuple(map(tuple, out)) if arr.ndim == 2 else tuple(out)


def _blend(a: Look, b: Look, t: float) -> dict:
    """Colour fields of two looks mixed at ``t``; palettes of different length take the shorter."""
    out = {}
    for f in dataclasses.fields(Look):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "name":
            continue
        arr_a, arr_b = np.asarray(va, float), np.asarray(vb, float)
        if arr_a.shape != arr_b.shape:  # palettes of different length
            n = min(len(arr_a), len(arr_b))
            arr_a, arr_b = arr_a[:n], arr_b[:n]
        mix = arr_a * (1 - t) + arr_b * t
        out[f.name] = float(mix) if mix.ndim == 0 else (tuple(map(tuple, mix)) if mix.ndim == 2 else tuple(mix))
    p = np.asarray(out["roof_p"])
    out["roof_p"] = tuple(p / p.sum())
    return out


@functools.lru_cache(maxsize=64)
def random_look(seed: int) -> Look:
    """A training look for one seed: two training looks blended, every colour and condition jittered."""
    rng = np.random.default_rng([seed, 0x100C])
    names = sorted(TRAIN_LOOKS)
    a, b = (TRAIN_LOOKS[names[i]] for i in rng.choice(len(names), 2, replace=False))
    v = _blend(a, b, float(rng.uniform()))
    for key in ("ground_dark", "ground_light", "soil", "fields", "roofs", "flats", "plaza_rgb", "path_rgb"):
        v[key] = _jitter_rgb(rng, v[key], 0.18)
    v["tree_tint"] = tuple(np.asarray(v["tree_tint"]) * rng.uniform(0.8, 1.2, 3))
    v["road"] = float(v["road"] * rng.uniform(0.8, 1.2))
    v["gain"] = tuple(rng.uniform(0.9, 1.1, 3))
    v["shadow_len"] = float(1 / np.tan(np.radians(rng.uniform(22, 72))))  # sun elevation 22-72 degrees
    v["shadow"] = tuple(np.clip(np.asarray(v["shadow"]) * rng.uniform(0.8, 1.25), 0.25, 0.75))
    v["haze"] = float(rng.uniform(0, 0.25))
    v["blur_px"] = float(rng.choice([0.0, rng.uniform(0.3, 1.2)]))
    v["noise"] = float(rng.uniform(3, 14))
    v["roof_contrast"] = float(rng.uniform(0.7, 1.4))
    v["confusers"] = float(rng.uniform(0.5, 1.6))
    for key in ("hip_share", "solar_share", "tree_over_roof"):
        v[key] = float(rng.uniform(0, 0.4))
    return Look("random", **v)


def resolve_look(name: str, seed: int) -> Look:
    """The look a spec names (``random``: drawn from the training looks for this seed)."""
    return random_look(seed) if name == "random" else LOOKS[name]
