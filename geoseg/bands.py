"""Which scene bands feed the model.

``--bands 1,2,3`` (1-based, in model order: rasterio's ``--bidx`` convention) wins; else bands the scene labels
(colour interpretation or band description: red, green, blue, nir...) are matched to the bundle's band names;
else the bundle's own band indexes, when the scene has as many data bands as the model expects.
"""

from __future__ import annotations

import re

from rasterio.enums import ColorInterp

from geoseg.errors import ConfigError, SceneError
from geoseg.models.bundle import BundleMeta
from geoseg.scene import SceneInfo, open_file

# band names as satellites and GDAL spell them, to the canonical name a bundle uses
ALIASES = {"r": "red", "g": "green", "b": "blue", "n": "nir", "near infrared": "nir", "near-infrared": "nir",
           "nearinfrared": "nir", "infrared": "nir", "nir1": "nir", "ir": "nir", "pan": "panchromatic",
           "gray": "gray", "grey": "gray"}
_COLOUR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue",
                 ColorInterp.gray: "gray"}


def parse_bands(text: str, option: str = "--bands") -> tuple[int, ...]:
    """``1,2,3`` or ``1..3`` (rasterio's ``--bidx`` forms) as 1-based band indexes."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:\.\.(\d+))?", part)
        if not m:
            raise ConfigError(f"{option} {text}: expected 1-based band numbers such as 1,2,3 or 1..3")
        first, last = int(m[1]), int(m[2] or m[1])
        out += range(first, last + 1)
    if not out or min(out) < 1:
        raise ConfigError(f"{option} {text}: band numbers start at 1 (as in gdal_translate -b); e.g. 1,2,3")
    return tuple(out)


def canonical(name: str | None) -> str | None:
    if not name:
        return None
    text = name.strip().lower()
    return ALIASES.get(text, text)


def scene_band_labels(path: str) -> list[str | None]:
    """Each band's label: its description when set, else its colour interpretation (None when unlabelled)."""
    with open_file(path) as src:  # a remote scene too
        return [canonical(desc) or _COLOUR_NAMES.get(ci) for desc, ci in zip(src.descriptions, src.colorinterp)]


def match_labels(labels: list[str | None], names: tuple[str, ...]) -> tuple[int, ...] | None:
    """1-based index of the scene band labelled as each of ``names``, or None unless every name is found once."""
    wanted = [canonical(n) for n in names]
    found = []
    for name in wanted:
        hits = [i + 1 for i, label in enumerate(labels) if label == name]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return tuple(found)


def check_band_count(bands: tuple[int, ...], meta: BundleMeta, model: str, bands_from: str = "--bands") -> None:
    if len(bands) != meta.n_bands:
        raise ConfigError(f"{bands_from} {','.join(map(str, bands))}: {len(bands)} band(s), but model {model} "
                          f"expects {meta.n_bands} ({', '.join(meta.band_names)}); give {meta.n_bands}, e.g. "
                          f"--bands {','.join(map(str, range(1, meta.n_bands + 1)))}")


def select_bands(scene: SceneInfo, meta: BundleMeta, bands: tuple[int, ...] | None, model: str,
                 bands_from: str = "--bands") -> tuple[tuple[int, ...], str | None]:
    """The scene bands to read (1-based, in the model's order) and a one-line note when they were matched by
    the scene's labels; raises a one-line error with a ``--bands`` hint that works."""
    expects = f"model {model} expects {meta.n_bands} ({', '.join(meta.band_names)})"
    if bands is not None:
        check_band_count(bands, meta, model, bands_from)
        if max(bands) > scene.count:
            raise ConfigError(f"{bands_from} {','.join(map(str, bands))}: {scene.path} has only {scene.count} "
                              f"band(s); choose among 1..{scene.count}")
        return bands, None
    matched = match_labels(scene_band_labels(scene.path), meta.band_names)
    if matched is not None and (matched != meta.band_indexes or scene.data_bands != meta.n_bands):
        pairs = ", ".join(f"{i}={n}" for i, n in zip(matched, meta.band_names))
        return matched, (f"{scene.path}: reading bands {pairs} of {scene.count}, matched by the scene's band "
                         f"labels to model {model}; pass --bands to choose others")
    if scene.data_bands != meta.n_bands or max(meta.band_indexes) > scene.count:
        hint = (f"select {meta.n_bands} of them in the model's order with --bands "
                f"{','.join(map(str, range(1, meta.n_bands + 1)))}" if scene.count >= meta.n_bands
                else "pick a model for this many bands")
        raise SceneError(f"{scene.path}: has {scene.data_bands} band(s) but {expects}; {hint}")
    return meta.band_indexes, None
