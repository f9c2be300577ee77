"""Pipelines: YAML recipes loaded with ``yaml.safe_load`` into typed, validated dataclasses."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError


@dataclass(frozen=True)
class ClassPost:
    """Post-processing for one class's vectors (metres are ground metres, whatever the CRS unit)."""

    min_area_m2: float = 4.0
    simplify_m: float = 0.25
    holes: bool = True               # keep interior rings; False fills them
    instance_split: bool | None = None   # separate touching objects (boundary/distance head, else EDT watershed);
    #                                      default: on for object classes, off for network classes
    split_depth_m: float = 1.0       # EDT watershed: a neck must be this much thinner than both bodies to split
    regularize: bool = False         # right-angle footprints
    regularize_m: float = 1.0        # how far (metres) regularisation may move the outline
    centerlines: bool | None = None  # network class: pieces cut on a global cell grid, plus a centerline layer;
    #                                  default: on for a class named "road"
    cell_m: float = 512.0            # network classes: side of the global cell grid (bounds memory)
    spur_m: float = 8.0              # network classes: dead-end branches shorter than this are pruned
    centerline_m: float = 1.0        # network classes: pixel size the skeleton is traced at (at most; the scene's
    #                                  own pixel when coarser). Well inside a road's width; at 0.5 m, 2x2 fewer
    #                                  pixels to thin cut the centerlines' CPU 2.4x


DEFAULT_POST = {"building": ClassPost(min_area_m2=8.0, simplify_m=0.25),
                "road": ClassPost(min_area_m2=20.0, simplify_m=0.5)}


def is_network(name: str, post: ClassPost) -> bool:
    """Roads (by default) are a network: cut on a cell grid, with centerlines, never split or squared."""
    return post.centerlines if post.centerlines is not None else name == "road"


@dataclass(frozen=True)
class InferConfig:
    """Everything ``geoseg infer`` needs besides the scene and the output paths."""

    model: str | None = None
    tile: int | None = None          # default: the bundle's
    halo: int | None = None          # default: the bundle's recommended halo
    block_size: int | None = None    # default: auto, ~1024 px (a batch of tiles), several per worker
    batch_size: int | None = None    # default: 1 on CPU, 16 on CUDA
    device: str = "auto"
    workers: int | None = None       # default: one per core
    scheduler: str = "threads"
    classes: tuple[str, ...] | None = None   # default: every non-background class
    bands: tuple[int, ...] | None = None     # 1-based scene bands in the model's order; default: matched by the
    #                                          scene's band labels, else the bundle's band indexes
    resample: bool = False           # read the scene at the model's GSD, write raster outputs on the scene's grid
    post: dict[str, ClassPost] = field(default_factory=lambda: dict(DEFAULT_POST))

    def post_for(self, name: str) -> ClassPost:
        return self.post.get(name, ClassPost())

    def replace(self, **changes: Any) -> "InferConfig":
        """A copy with the non-None ``changes`` applied (CLI options override the pipeline)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def override_post(config: InferConfig, **changes: Any) -> InferConfig:
    """CLI switches (``--regularize``, ``--no-holes``, ``--instance-split``...) applied to every object class
    (not to network classes such as roads, which are never split or squared); ``None`` leaves a key alone."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return config
    names = set(config.post) | {"building"}
    post = {}
    for name in names:
        cp = config.post_for(name)
        keys = changes if not is_network(name, cp) else {k: v for k, v in changes.items() if k == "holes"}
        post[name] = dataclasses.replace(cp, **keys)
    return dataclasses.replace(config, post=post)


_SCALARS = (int, float, str, bool, type(None))


def check_keys(cls: type, raw: Any, where: str) -> dict[str, Any]:
    """Validate a YAML mapping against a dataclass: unknown keys and wrong scalar types fail in one line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        allowed = typing.get_args(hints[key]) or (hints[key],)
        if not all(t in _SCALARS for t in allowed):
            continue  # containers are converted (and checked) by their loaders
        if not any(_is(value, t) for t in allowed):
            raise ConfigError(f"{where}: {key} must be {' or '.join(t.__name__ for t in allowed)}, got {value!r}")
    return dict(raw)


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A pipeline file as plain data (``yaml.safe_load``: no code runs from data)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: pipeline file not found; check the path (recipes are in pipelines/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return check_keys(_Doc, raw, str(path))


def load_pipeline(path: str | Path) -> InferConfig:
    """Read a pipeline YAML (only its ``infer`` section matters here) into an :class:`InferConfig`."""
    section = check_keys(InferConfig, read_yaml(path).get("infer") or {}, f"{path}: infer")
    post = dict(DEFAULT_POST)
    for name, values in (section.pop("post", None) or {}).items():
        # keys given override the class's defaults (roads keep their centerlines unless told otherwise)
        post[name] = dataclasses.replace(post.get(name, ClassPost()),
                                         **check_keys(ClassPost, values, f"{path}: infer.post.{name}"))
    if "classes" in section and section["classes"] is not None:
        section["classes"] = tuple(section["classes"])
    if section.get("bands") is not None:
        from geoseg.bands import parse_bands

        raw = section["bands"]
        section["bands"] = parse_bands(",".join(map(str, raw)) if isinstance(raw, list) else str(raw),
                                       f"{path}: infer.bands")
    try:
        return InferConfig(post=post, **section)
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from None


@dataclass
class _Doc:
    """Top-level keys a pipeline file may hold; ``train`` is read by the trainer."""

    name: str = ""
    description: str = ""
    infer: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
