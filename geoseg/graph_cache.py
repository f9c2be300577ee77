"""The exported model graphs that ``--runtime onnxruntime|openvino`` run, cached in the user's cache folder.

A graph is keyed by what changes it: the bundle's bytes (sha256), the tile size, the ONNX opset and the
exporter (torch version, :data:`GRAPH_FORMAT`). It lives in ``$XDG_CACHE_HOME/geoseg/graphs`` (default
``~/.cache/geoseg/graphs``; ``GEOSEG_CACHE_DIR`` overrides), never inside the installed package, is written to a
temporary name and renamed into place, and is rebuilt when the file there is unreadable or carries another key.
Beside each graph, a small JSON file records how each runtime compared with torch on this machine
(:mod:`geoseg.runtime` checks before it trusts a runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import BundleError
from geoseg.tempfiles import atomic_path

OPSET = 18
GRAPH_FORMAT = 1  # bump when the exported graph's inputs/outputs change meaning
KEY_PROP = "geoseg_graph_key"
_SHA: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def cache_root() -> Path:
    """``GEOSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/geoseg``, else ``~/.cache/geoseg`` (the XDG default)."""
    explicit = os.environ.get("GEOSEG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoseg"


def bundle_sha256(path: str | Path) -> str:
    """The bundle file's sha256, remembered per (path, size, mtime) so a worker hashes it once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _SHA:
            return _SHA[key]
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _LOCK:
        _SHA[key] = digest
    return digest


def graph_key(bundle_path: str | Path, tile: int, opset: int = OPSET) -> str:
    """The name a graph is cached under: everything that changes the exported file."""
    torch_version = torch.__version__.split("+")[0]
    return f"{bundle_sha256(bundle_path)[:24]}-t{tile}-opset{opset}-torch{torch_version}-g{GRAPH_FORMAT}"


def _graph_dir() -> Path:
    folder = cache_root() / "graphs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BundleError(f"{folder}: cannot create the graph cache ({err.strerror}); set GEOSEG_CACHE_DIR or "
                          "XDG_CACHE_HOME to a writable folder") from None
    return folder


def _is_current(path: Path, key: str) -> bool:
    """The cached file is a whole ONNX model carrying ``key`` (a truncated or foreign file is stale)."""
    import onnx

    if not path.exists():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises DecodeError/OSError/...: any of them means rebuild
        return False
    return any(p.key == KEY_PROP and p.value == key for p in model.metadata_props)


def cached_graph(bundle_path: str | Path, tile: int, opset: int = OPSET) -> Path:
    """The ONNX graph of a bundle at ``tile``, exported (atomically) if missing or stale."""
    from geoseg.models.bundle import load_bundle
    from geoseg.models.onnx_export import export_onnx

    key = graph_key(bundle_path, tile, opset)
    path = _graph_dir() / f"{key}.onnx"
    if _is_current(path, key):
        return path
    export_onnx(load_bundle(bundle_path), path, opset=opset, tile=tile, extra_props={KEY_PROP: key})
    return path


def read_checks(graph: Path) -> dict[str, Any]:
    """The per-runtime checks recorded beside a graph ({} when none or unreadable)."""
    try:
        return dict(json.loads(graph.with_suffix(".checks.json").read_text()))
    except (OSError, ValueError):
        return {}


def write_check(graph: Path, name: str, record: dict[str, Any]) -> None:
    """Add one runtime's check to the JSON beside ``graph`` (temp file, then rename)."""
    with _LOCK:
        checks = read_checks(graph)
        checks[name] = record
        out = graph.with_suffix(".checks.json")
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(checks, indent=1, sort_keys=True))
