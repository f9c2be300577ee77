"""Every check an ``infer`` run can make before any compute, without torch, Dask or the engine imported.

The CLI calls :func:`check_run` first, so a user error (a missing file, an existing output, a bad option) answers
in a fraction of a second; :func:`geoseg.infer.infer` calls it again as a library entry point.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from geoseg.bands import check_band_count, select_bands
from geoseg.errors import BundleError, ConfigError, OutputError, SceneError
from geoseg.tiling import TileSpec, check_tiling
from geoseg.models.bundle import BundleMeta, gsd_mismatch, read_meta, resolve_bundle
from geoseg.paths import (VECTOR_FORMATS, PathLike, check_distinct, check_input, check_output,
                          check_raster_suffix)
from geoseg.pipeline import InferConfig, is_network
from geoseg.plan import check_declared
from geoseg.scene import SceneInfo, open_scene

if TYPE_CHECKING:
    from geoseg.batch.inputs import StacSearch

log = logging.getLogger("geoseg")


@dataclass(frozen=True)
class CheckedModel:
    """The bundle (resolved path and metadata), tiling, classes to vectorise and their layer names."""

    bundle: str
    meta: BundleMeta
    spec: TileSpec
    class_ids: tuple[int, ...]
    layers: dict[int, str]


@dataclass(frozen=True)
class CheckedRun:
    """What the checks resolved: the scene, the bundle (``meta.band_indexes``: the scene bands read), tiling,
    the classes to vectorise and their layer names."""

    scene: SceneInfo
    bundle: str
    meta: BundleMeta
    spec: TileSpec
    class_ids: tuple[int, ...]
    layers: dict[int, str]


def check_run(scene_path: PathLike, out: PathLike | None, config: InferConfig, *,
              raster_out: PathLike | None = None, prob_out: PathLike | None = None, overwrite: bool = False,
              inputs: Mapping[str, PathLike | None] | None = None,
              value_from: Mapping[str, str] | None = None, warn: bool = True) -> CheckedRun:
    """Check paths, bundle, bands, tiling and classes; nothing is written or computed.

    ``inputs``: other files the run reads (e.g. ``{"--pipeline": path}``), never to be an output.
    ``value_from``: where a config value came from (``{"tile": "pipe.yaml: infer.tile"}``) for the messages.
    ``warn``: log the warnings (pixel size, bands matched by label); the CLI's early call leaves them to the run.
    """
    outputs = [(o, p) for o, p in (("--out", out), ("--raster-out", raster_out), ("--prob-out", prob_out)) if p]
    if not outputs:
        raise ConfigError("nothing to write: give --out, --raster-out or --prob-out")
    scene_path = check_input(scene_path)  # a file:// URL becomes the local path it names
    # an output on an input first: "already exists, pass --overwrite" would be a hint that cannot work there
    check_distinct(outputs, {"scene": scene_path, **(inputs or {})})
    for option, path in outputs:
        check_output(path, overwrite)
        if option == "--out":
            ext = Path(path).suffix.lower()
            if ext not in VECTOR_FORMATS:
                raise OutputError(f"{path}: unknown vector format {ext or '(no extension)'}; use one of "
                                  f"{', '.join(VECTOR_FORMATS)}")
        else:
            check_raster_suffix(path, option)
    check_where(config)
    model = check_model(config, value_from)
    bundle, spec, class_ids = model.bundle, model.spec, model.class_ids
    readers = {"scene": scene_path, "--model": bundle, **(inputs or {})}
    check_distinct(outputs, readers)
    scene = open_scene(scene_path)
    check_declared(scene)
    name = config.model or "default"
    bands, note = select_bands(scene, model.meta, config.bands, name, (value_from or {}).get("bands", "--bands"))
    if note and warn:
        log.warning(note)
    meta = dataclasses.replace(model.meta, band_indexes=bands)
    check_fit(scene, meta, bundle, config.resample or not warn)
    layers = model.layers
    if out:
        files = layer_files(out, config, meta, class_ids, layers, str(bundle))
        for path in files:
            check_output(path, overwrite)
        check_distinct([o for o in outputs if o[0] != "--out"] + [("--out", p) for p in files], readers)
    return CheckedRun(scene, bundle, meta, spec, class_ids, layers)


def check_model(config: InferConfig, value_from: Mapping[str, str] | None = None) -> CheckedModel:
    """The scene-independent checks (``geoseg batch`` makes them once, before any scene): the bundle, tiling,
    classes and the number of ``--bands``."""
    bundle = str(resolve_bundle(config.model).resolve())
    meta = read_meta(bundle)
    where = dict(value_from or {})
    name = config.model or "default"
    if config.bands is not None:
        check_band_count(config.bands, meta, name, where.get("bands", "--bands"))
    tile = meta.tile if config.tile is None else config.tile
    halo = meta.halo if config.halo is None else config.halo
    check_tiling(tile, halo, meta.stride, where.get("tile", "--tile" if config.tile is not None else
                                                    f"{bundle}: tile"),
                 where.get("halo", "--halo" if config.halo is not None else f"{bundle}: halo"))
    class_ids = check_classes(config, meta, name, where.get("classes", "--classes"))
    layers = {k: meta.classes[k].layer or f"{meta.classes[k].name}s" for k in class_ids}
    return CheckedModel(bundle, meta, TileSpec(tile, halo, meta.stride), class_ids, layers)


def check_where(config: InferConfig) -> None:
    """The spelling of ``--scheduler`` and ``--device`` (whether a CUDA device exists is torch's to say, later)."""
    if config.scheduler not in ("threads", "processes") and not config.scheduler.startswith(("tcp://", "tls://")):
        raise ConfigError(f"--scheduler {config.scheduler}: use threads, processes or tcp://HOST:PORT")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?", config.device):
        raise ConfigError(f"--device {config.device}: not a device; use auto, cpu or cuda[:N]")


def check_fit(scene: SceneInfo, meta: BundleMeta, bundle: str, resample: bool = False) -> None:
    """The scene's dtype must have an input range in the bundle; a pixel size far from the model's GSD warns
    (unless the scene is to be resampled to it)."""
    try:
        meta.scale_for(np.dtype(scene.dtype))
    except BundleError as err:
        raise SceneError(f"{scene.path}: {err} ({bundle})") from None
    message = None if resample else gsd_mismatch(scene.gsd_m, meta, str(scene.path))
    if message:
        log.warning(message)


def check_classes(config: InferConfig, meta: BundleMeta, model: str, source: str) -> tuple[int, ...]:
    """Indexes of the classes to vectorise; an unknown name gets a "did you mean"."""
    names = [c.name for c in meta.classes]
    wanted = config.classes or tuple(names[1:])
    for name in wanted:
        if name not in names[1:]:
            close = difflib.get_close_matches(name, names[1:], n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{source} {name}: model {model} has no class {name!r}; {guess}"
                              f"its classes are {', '.join(names[1:])}")
    return tuple(names.index(c) for c in wanted)


def layer_files(out: PathLike, config: InferConfig, meta: BundleMeta, class_ids: tuple[int, ...],
                layers: dict[int, str], bundle: str) -> list[Path]:
    """The files ``--out`` writes (one per layer unless GeoPackage); two layers on one name are refused
    (GeoPackage table names ignore case, so compare them casefolded)."""
    owners: dict[str, str] = {}
    names = []
    for k in class_ids:
        name = meta.classes[k].name
        for layer in [layers[k]] + ([f"{name}_centerlines"] if is_network(name, config.post_for(name)) else []):
            if layer.casefold() in owners:
                raise OutputError(f"{out}: classes {owners[layer.casefold()]} and {name} would both write layer "
                                  f"{layer!r} ({bundle}); vectorise one of them with --classes")
            owners[layer.casefold()] = name
            names.append(layer)
    path = Path(out)
    if path.suffix.lower() == ".gpkg":
        return [path]
    return [path.with_name(f"{path.stem}_{layer}{path.suffix}") for layer in names]


def check_batch_paths(source: "str | StacSearch", out_dir: PathLike, inputs: Mapping[str, PathLike | None],
                      asset_keys: tuple[str, ...]) -> int:
    """``geoseg batch``'s inputs exist and its output folder can be one; returns the number of scenes found.

    Batch writes .gpkg and .tif files into ``out_dir``: an input file there (a pipeline, a bundle) could be
    replaced, so it is refused. Each scene is checked against its own outputs by :func:`check_run`.
    """
    from geoseg.batch.inputs import list_scenes  # standard library only

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out-dir {folder}: is a file, not a folder; give a folder (created if missing)")
    refs = list_scenes(source, exclude=folder, asset_keys=asset_keys)
    for label, path in inputs.items():
        if path is None or not Path(path).is_file():
            continue
        inside = Path(os.path.realpath(path)).parent == Path(os.path.realpath(folder))
        if inside and Path(path).suffix.lower() in (".gpkg", ".tif", ".tiff"):
            raise OutputError(f"{label} {path}: lies in --out-dir {folder}, where batch writes .gpkg/.tif outputs; "
                              "keep inputs outside the output folder")
    return len(refs)
