"""What a batch runs over: a folder, a glob, a text manifest, a STAC ItemCollection/Catalog (on disk or over
HTTP(S)), a STAC API search, or one scene (a file or a URL).

Each input becomes a :class:`SceneRef` with a deterministic output name. Remote scenes (URLs, object-store keys,
STAC assets) are read in place, window by window (:mod:`geoseg.remote`). An input that cannot become a scene (a
STAC item without the asset, a remote catalogue naming a local file) is still a ``SceneRef``, carrying the reason
it fails, so the batch records it and goes on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin, urlparse

from geoseg.errors import ConfigError
from geoseg.remote import is_remote, local_path, redact

SCENE_SUFFIXES = (".tif", ".tiff")
DEFAULT_ASSETS = ("visual", "image")
STAC_FETCH_TIMEOUT_S = 60
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SceneRef:
    """One scene of a batch: where it is, the name its outputs get, and why it cannot run (if it cannot)."""

    path: str
    name: str
    problem: str = ""


@dataclass(frozen=True)
class StacSearch:
    """A STAC API item search (``geoseg batch --stac-api``), run with pystac-client."""

    url: str
    collections: tuple[str, ...]
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    query: tuple[str, ...] = ()  # pystac-client's "eo:cloud_cover<10" form, or one JSON object

    def __str__(self) -> str:
        return f"--stac-api {redact(self.url)}"


def list_scenes(source: str | StacSearch, exclude: Path | None = None,
                asset_keys: tuple[str, ...] = DEFAULT_ASSETS) -> list[SceneRef]:
    """Resolve ``source`` into scenes with unique output names, in a deterministic order.

    ``exclude`` (the output folder) is never scanned, so outputs written inside an input folder are not inputs.
    """
    if isinstance(source, StacSearch):
        refs = list(search_scenes(source, asset_keys))
        if not refs:
            raise ConfigError(f"{source}: the search found no items; widen --bbox/--datetime/--query or check "
                              "--collection")
        return unique_names(refs)
    source = local_path(source) or source  # file:// is a local path
    if is_remote(source):
        if _url_path(source).lower().endswith(SCENE_SUFFIXES):
            return unique_names([SceneRef(source, Path(_url_path(source)).stem)])
        return unique_names(list(_stac_scenes(source, asset_keys))) or _none_found(source)
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
    return unique_names(refs) if refs else _none_found(source)


def _none_found(source: str) -> list[SceneRef]:
    raise ConfigError(f"{source}: no scenes found (looked for {', '.join(SCENE_SUFFIXES)} files)")


def unique_names(refs: list[SceneRef]) -> list[SceneRef]:
    """Safe file names; a name shared by several scenes gets a short hash of the scene's path, so every name
    depends only on its own scene (the same whatever the order or the other inputs)."""
    refs = [SceneRef(r.path, _UNSAFE.sub("_", r.name).lstrip(".") or "scene", r.problem) for r in refs]
    counts = Counter(r.name for r in refs)
    named = [r if counts[r.name] == 1 else
             SceneRef(r.path, f"{r.name}-{hashlib.sha1(redact(r.path).encode()).hexdigest()[:8]}", r.problem)
             for r in refs]  # hashed without credentials: a re-signed URL keeps its name
    seen: set[str] = set()
    out = []
    for r in named:  # the same file listed twice runs once
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def _url_path(url: str) -> str:
    return urlparse(url.split("://", 1)[1] if "://" in url else url).path


def _text_manifest(path: Path) -> Iterator[SceneRef]:
    """One scene per line, a path or a URL; blank lines and ``#`` comments are ignored; relative paths start at
    the manifest's folder."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text manifest (one scene path per line), a folder, a glob or a STAC "
                          "JSON") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = local_path(line) or line
        if is_remote(line):
            yield SceneRef(line, Path(_url_path(line)).stem)
            continue
        scene = Path(line) if Path(line).is_absolute() else path.parent / line
        yield SceneRef(str(scene.resolve()), scene.stem)


# Hand-written rather than through pystac: only three fields of the JSON documents are read (type, links,
# assets[key].href), relative hrefs resolved against the document's location; no dependency needed for that.
# A location is a local path or an http(s) URL; a catalogue read over the network may not name local files.
def _stac_scenes(location: str | Path, asset_keys: tuple[str, ...]) -> Iterator[SceneRef]:
    start = str(location) if is_remote(str(location)) else str(Path(location).resolve())
    yield from _stac_walk(start, asset_keys, set())


def _stac_walk(location: str, asset_keys: tuple[str, ...], seen: set[str]) -> Iterator[SceneRef]:
    if location in seen:
        return
    seen.add(location)
    doc = _read_json(location)
    kind = doc.get("type")
    if kind == "FeatureCollection":
        for item in doc.get("features") or []:
            yield _stac_item(item, location, asset_keys)
    elif kind == "Feature":
        yield _stac_item(doc, location, asset_keys)
    elif kind in ("Catalog", "Collection"):
        for link in doc.get("links") or []:
            if link.get("rel") in ("item", "child") and link.get("href"):
                target, problem = _resolve(location, link["href"])
                if problem:
                    yield SceneRef(target, Path(_url_path(target)).stem or "link", problem)
                    continue
                if not target.startswith(("http://", "https://")) and is_remote(target):
                    yield SceneRef(target, Path(_url_path(target)).stem or "link", f"{target}: STAC link to an "
                                   "object store; geoseg reads catalogues from disk or over HTTP(S)")
                    continue
                yield from _stac_walk(target, asset_keys, seen)
    else:
        raise ConfigError(f"{redact(location)}: not a STAC ItemCollection, Item or Catalog (type {kind!r})")


def _resolve(base: str, href: str) -> tuple[str, str]:
    """(location of ``href`` as seen from document ``base``, why it may not be read or ""). A document read over
    the network naming a local file (``file://``) is refused: no file is read that the user did not name, whatever
    a server says (an href ``/a/b.tif`` there is a path on that server, as in any web page)."""
    local = local_path(href)
    if is_remote(base):
        if local is not None:
            return href, (f"{redact(base)}: a remote STAC document names the local file {href}; refused (geoseg "
                          "reads only the local files you name)")
        return (href if is_remote(href) else urljoin(base, href)), ""
    if is_remote(href):
        return href, ""
    return str((Path(base).parent / (local if local is not None else href)).resolve()), ""


def _read_json(location: str) -> dict[str, Any]:
    shown = redact(location)
    url = location[len("/vsicurl/"):] if location.startswith("/vsicurl/") else location
    if is_remote(location) and not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{shown}: STAC documents are read from disk or over HTTP(S); serve the catalogue over "
                          "HTTPS or copy it locally (its assets may stay in the object store)")
    try:
        if is_remote(location):
            with urllib.request.urlopen(url, timeout=STAC_FETCH_TIMEOUT_S) as response:
                text = response.read().decode()
        else:
            text = Path(location).read_text()
        doc = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: STAC link points to a missing file; fix the catalogue") from None
    except urllib.error.HTTPError as err:
        raise ConfigError(f"{shown}: STAC document not fetched (HTTP {err.code} {err.reason}); check the URL") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise ConfigError(f"{shown}: STAC document not fetched ({reason}); check the URL and the network") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{shown}: not valid JSON ({err}); give a STAC ItemCollection or Catalog") from None
    except ValueError as err:  # http.client's InvalidURL (e.g. a user:password@ it cannot send)
        raise ConfigError(f"{shown}: STAC document not fetched ({err}); check the URL") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{shown}: not a STAC document (expected a JSON object)")
    return doc


def _stac_item(item: dict[str, Any], base: str, asset_keys: tuple[str, ...]) -> SceneRef:
    """The scene of one item: its first asset among ``asset_keys``, a local file or read in place if remote."""
    name = str(item.get("id") or "item")
    assets = item.get("assets") or {}
    key = next((k for k in asset_keys if k in assets and assets[k].get("href")), None)
    shown = redact(base)
    if key is None:
        return SceneRef(f"{base}#{name}", name, f"{shown}: STAC item {name} has no asset "
                        f"{' or '.join(asset_keys)} (has: {', '.join(assets) or 'none'}); choose one with --asset")
    self_href = next((link.get("href") for link in item.get("links") or [] if link.get("rel") == "self"), None)
    if is_remote(base) and self_href and is_remote(self_href):
        base = self_href  # an API's items: relative asset hrefs start at the item's own URL
    target, problem = _resolve(base, assets[key]["href"])
    return SceneRef(target, name, problem.replace("STAC document", f"STAC item {name}") if problem else "")


_QUERY_OPS = {"<=": "lte", ">=": "gte", "!=": "neq", "<": "lt", ">": "gt", "=": "eq"}


def stac_query(terms: tuple[str, ...]) -> dict[str, Any] | None:
    """``--query`` terms as the query extension's object: ``eo:cloud_cover<10`` -> ``{"eo:cloud_cover":
    {"lt": 10}}`` (values read as JSON, so numbers stay numbers), or one JSON object as it is."""
    if len(terms) == 1 and terms[0].lstrip().startswith("{"):
        try:
            return dict(json.loads(terms[0]))
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ConfigError(f"--query {terms[0]}: not a JSON object ({err})") from None
    out: dict[str, Any] = {}
    for term in terms:
        match = re.fullmatch(r"\s*([\w:.-]+)\s*(<=|>=|!=|<|>|=)\s*(.+?)\s*", term)
        if not match:
            raise ConfigError(f"--query {term}: expected PROPERTY<OP>VALUE with OP one of "
                              f"{' '.join(_QUERY_OPS)}, e.g. 'eo:cloud_cover<10'")
        name, op, text = match.groups()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(name, {})[_QUERY_OPS[op]] = value
    return out or None


def search_scenes(search: StacSearch, asset_keys: tuple[str, ...]) -> Iterator[SceneRef]:
    """The items of a STAC API search (pystac-client: paging, conformance, the POST /search body)."""
    try:
        from pystac_client import Client
        from pystac_client.exceptions import APIError
    except ImportError:
        raise ConfigError("--stac-api needs pystac-client: pip install 'geoseg[stac]'") from None
    query = stac_query(search.query)
    shown = redact(search.url)
    try:
        client = Client.open(search.url, timeout=STAC_FETCH_TIMEOUT_S)
        found = client.search(collections=list(search.collections), bbox=search.bbox, datetime=search.datetime,
                              query=query)
        items = list(found.items_as_dicts())
    except APIError as err:
        raise ConfigError(f"--stac-api {shown}: the search failed ({redact(str(err).splitlines()[0])[:200]}); "
                          "check --collection, --bbox, --datetime and --query") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"--stac-api {shown}: {type(err).__name__}: {redact(str(err))[:200]}; check the URL "
                          "(the API's landing page)") from None
    for item in items:
        yield _stac_item(item, search.url, asset_keys)
