"""What a batch runs over: a folder, a glob, a text manifest or a STAC ItemCollection/Catalog on disk.

Each input becomes a :class:`SceneRef` with a deterministic output name. An input that cannot become a scene
(a STAC item without the asset, a remote href) is still a ``SceneRef``, carrying the reason it fails, so the
batch records it and goes on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from geoseg.errors import ConfigError

SCENE_SUFFIXES = (".tif", ".tiff")
DEFAULT_ASSETS = ("visual", "image")
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SceneRef:
    """One scene of a batch: where it is, the name its outputs get, and why it cannot run (if it cannot)."""

    path: str
    name: str
    problem: str = ""


def list_scenes(source: str, exclude: Path | None = None, asset_keys: tuple[str, ...] = DEFAULT_ASSETS
                ) -> list[SceneRef]:
    """Resolve ``source`` into scenes with unique output names, in a deterministic order.

    ``exclude`` (the output folder) is never scanned, so outputs written inside an input folder are not inputs.
    """
    path = Path(source)
    if path.is_dir():
        found = [(str(p.resolve()), p.stem) for p in sorted(path.rglob("*"))
                 if p.suffix.lower() in SCENE_SUFFIXES and p.is_file() and not p.name.startswith(".")
                 and not _inside(p, exclude)]
        refs = [SceneRef(p, stem) for p, stem in found]
    elif _GLOB_CHARS.search(source) and not path.exists():
        refs = [SceneRef(str(Path(p).resolve()), Path(p).stem) for p in sorted(glob.glob(source, recursive=True))
                if Path(p).is_file() and not _inside(Path(p), exclude)]
    elif not path.exists():
        raise ConfigError(f"{source}: no such folder, file or matching glob; give a folder, a glob, a text "
                          "manifest or a STAC JSON")
    elif path.suffix.lower() in SCENE_SUFFIXES:
        refs = [SceneRef(str(path.resolve()), path.stem)]
    elif path.suffix.lower() == ".json":
        refs = list(_stac_scenes(path, asset_keys))
    else:
        refs = list(_text_manifest(path))
    if not refs:
        raise ConfigError(f"{source}: no scenes found (looked for {', '.join(SCENE_SUFFIXES)} files)")
    return unique_names(refs)


def unique_names(refs: list[SceneRef]) -> list[SceneRef]:
    """Safe file names; a name shared by several scenes gets a short hash of the scene's path, so every name
    depends only on its own scene (the same whatever the order or the other inputs)."""
    refs = [SceneRef(r.path, _UNSAFE.sub("_", r.name).lstrip(".") or "scene", r.problem) for r in refs]
    counts = Counter(r.name for r in refs)
    named = [r if counts[r.name] == 1 else
             SceneRef(r.path, f"{r.name}-{hashlib.sha1(r.path.encode()).hexdigest()[:8]}", r.problem) for r in refs]
    seen: set[str] = set()
    out = []
    for r in named:  # the same file listed twice runs once
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def _text_manifest(path: Path) -> Iterator[SceneRef]:
    """One scene path per line; blank lines and ``#`` comments are ignored; relative paths start at the
    manifest's folder."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text manifest (one scene path per line), a folder, a glob or a STAC "
                          "JSON") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            scene = Path(line) if Path(line).is_absolute() else path.parent / line
            yield SceneRef(str(scene.resolve()), scene.stem)


# Hand-written rather than through pystac: only three fields of local JSON files are read (type, links,
# assets[key].href), with relative hrefs resolved against the file's folder; no dependency needed for that.
def _stac_scenes(path: Path, asset_keys: tuple[str, ...]) -> Iterator[SceneRef]:
    seen: set[Path] = set()
    yield from _stac_walk(path.resolve(), asset_keys, seen)


def _stac_walk(path: Path, asset_keys: tuple[str, ...], seen: set[Path]) -> Iterator[SceneRef]:
    if path in seen:
        return
    seen.add(path)
    doc = _read_json(path)
    kind = doc.get("type")
    if kind == "FeatureCollection":
        for item in doc.get("features") or []:
            yield _stac_item(item, path.parent, asset_keys, path)
    elif kind == "Feature":
        yield _stac_item(doc, path.parent, asset_keys, path)
    elif kind in ("Catalog", "Collection"):
        for link in doc.get("links") or []:
            if link.get("rel") in ("item", "child") and link.get("href"):
                href = link["href"]
                if _is_remote(href):
                    yield SceneRef(href, Path(urlparse(href).path).stem,
                                   f"{href}: remote STAC link; geoseg batch reads catalogues on disk only")
                    continue
                yield from _stac_walk((path.parent / href).resolve(), asset_keys, seen)
    else:
        raise ConfigError(f"{path}: not a STAC ItemCollection, Item or Catalog (type {kind!r})")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: STAC link points to a missing file; fix the catalogue") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); give a STAC ItemCollection or Catalog") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a STAC document (expected a JSON object)")
    return doc


def _stac_item(item: dict[str, Any], folder: Path, asset_keys: tuple[str, ...], source: Path) -> SceneRef:
    name = str(item.get("id") or "item")
    assets = item.get("assets") or {}
    key = next((k for k in asset_keys if k in assets and assets[k].get("href")), None)
    if key is None:
        return SceneRef(f"{source}#{name}", name, f"{source}: STAC item {name} has no asset "
                        f"{' or '.join(asset_keys)} (has: {', '.join(assets) or 'none'}); choose one with --asset")
    href = assets[key]["href"]
    if _is_remote(href):
        return SceneRef(href, name, f"{href}: remote asset of STAC item {name}; download it first, geoseg reads "
                        "scenes on disk")
    href = urlparse(href).path if href.startswith("file://") else href
    return SceneRef(str((folder / href).resolve()), name)


def _is_remote(href: str) -> bool:
    return urlparse(href).scheme not in ("", "file") and not re.match(r"^[A-Za-z]:\\", href)
