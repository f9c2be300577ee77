"""Pipelines: YAML recipes loaded with ``yaml.safe_load`` into typed, validated dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BeforeValidator, TypeAdapter, ValidationError

from geoseg.errors import ConfigError
from geoseg.post import DEFAULT_POST, SCHEMA, ClassPost, is_network

__all__ = ["DEFAULT_POST", "SCHEMA", "ClassPost", "InferConfig", "Precision", "Runtime", "is_network", "load_pipeline",
           "override_post", "parse", "read_yaml"]

T = TypeVar("T")
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class InferConfig:
    """Everything ``geoseg infer`` needs besides the scene and the output paths."""

    __pydantic_config__ = SCHEMA

    model: str | None = None
    tile: int | None = None          # default: the bundle's
    halo: int | None = None          # default: the bundle's recommended halo
    block_size: int | None = None    # default: auto, ~1024 px (a batch of tiles), several per worker
    batch_size: int | None = None    # default: 1 on CPU, 16 on CUDA
    device: str = "auto"
    runtime: Runtime = "torch"  # auto: the fastest checked here
    precision: Precision = "fp32"   # bf16/fp16: opt-in, for a named runtime (geoseg.runtime)
    tta: Literal[1, 4, 8] = 1        # test-time augmentation: views (flips, quarter turns) averaged per tile
    workers: int | None = None       # default: one per core
    scheduler: str = "threads"
    classes: Annotated[tuple[str, ...] | None, BeforeValidator(names)] = None  # default: every non-background
    # 1-based scene bands in the model's order (``[3, 2, 1]`` or ``3,2,1``); default: matched by the scene's band
    # labels, else the bundle's band indexes
    bands: Annotated[tuple[int, ...] | None, BeforeValidator(band_numbers)] = None
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


_ADAPTERS: dict[type, TypeAdapter] = {}  # pydantic builds a validator per config type once (a few ms each)


def parse(cls: type[T], raw: Any, where: str) -> T:
    """Validate plain YAML data against a config dataclass (pydantic, from its type hints) and build it.

    Any wrong key, type or container fails with one line naming ``where`` (the file and section) and the key path.
    """
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    try:
        return typing.cast(T, adapter.validate_python(raw))
    except ValidationError as err:
        raise ConfigError(_one_line(err, cls, where)) from None


def _one_line(err: ValidationError, cls: type, where: str) -> str:
    """The first problem as ``FILE: section.key.path: what is wrong (got X)``, with valid keys for a typo."""
    problems = err.errors(include_url=False)
    first = problems[0]
    loc = [p for p in first["loc"] if isinstance(p, int) or not _is_tag(str(p))]
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        *parent, key = loc
        valid = _field_names(cls, parent)
        hint = difflib.get_close_matches(str(key), valid, n=1)
        did = f"did you mean {hint[0]}? " if hint else ""
        return f"{_at(where, parent)}: unknown key {key}; {did}valid: {', '.join(valid)}{more}"
    got = "" if first["type"] == "missing" else f" (got {first['input']!r})"
    return f"{_at(where, loc)}: {_plain(first['msg'])}{got}{more}"


def _plain(msg: str) -> str:
    """pydantic's wording in YAML terms: a list, a mapping, a required key."""
    msg = re.sub(r" or an instance of \w+", "", msg)
    for theirs, ours in (("Input should be", "should be"), ("a valid tuple", "a list"), ("a valid list", "a list"),
                         ("a valid dictionary", "a mapping (key: value)"), ("a dictionary", "a mapping (key: value)"),
                         ("Field required", "required key missing")):
        msg = msg.replace(theirs, ours)
    return msg


def _is_tag(part: str) -> bool:
    """pydantic's own location parts (union members, validator wrappers), not keys of the YAML."""
    return "[" in part or part in ("int", "float", "str", "bool", "none", "tuple", "list", "dict")


def _at(where: str, loc: list) -> str:
    """``FILE: infer`` + ``post.x`` -> ``FILE: infer.post.x``; ``FILE`` + ``infer`` -> ``FILE: infer``."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    if not text or ": " in where:
        return where + text
    return f"{where}: {text.lstrip('.')}"


def _field_names(cls: Any, loc: list) -> list[str]:
    """The keys valid at ``loc`` inside ``cls``: walk dataclass fields, mappings' values and sequences' items."""
    kind = cls
    for part in loc:
        kind = _unwrap(kind)
        if dataclasses.is_dataclass(kind):
            kind = typing.get_type_hints(kind, include_extras=True).get(str(part), Any)
        else:
            args = typing.get_args(kind)  # tuple[X, ...] / list[X] -> X; dict[str, X] -> X
            kind = (args[0] if isinstance(part, int) else args[-1]) if args else Any
    kind = _unwrap(kind)
    return sorted(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else []


def _unwrap(kind: Any) -> Any:
    """``X | None`` -> X and ``Annotated[X, ...]`` -> X."""
    while True:
        if typing.get_origin(kind) is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) in (types.UnionType, typing.Union):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        else:
            return kind


def band_numbers(value: Any) -> Any:
    """``bands: 3,2,1`` or ``[3, 2, 1]``: 1-based band numbers, as ``--bands`` takes them."""
    if value is None or isinstance(value, bool):
        return value
    from geoseg.bands import parse_bands

    text = value if isinstance(value, str) else ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return parse_bands(text, "bands")


def names(value: Any) -> Any:
    """``classes: building`` or ``building,road`` (as on the command line) means those names, not letters."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A pipeline file as plain data (``yaml.safe_load``: no code runs from data), its top level checked."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: pipeline file not found; check the path (recipes are in pipelines/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of name, description, infer, train; got {type(raw).__name__}")
    raw = {k: ({} if v is None and k in ("infer", "train") else v) for k, v in raw.items()}  # an empty section
    parse(_Doc, raw, str(path))
    return raw


def load_pipeline(path: str | Path) -> InferConfig:
    """Read a pipeline YAML (only its ``infer`` section matters here) into an :class:`InferConfig`."""
    section = dict(read_yaml(path).get("infer") or {})
    given = section.get("post") or {}
    section["post"] = {k: ({} if v is None else v) for k, v in given.items()} if isinstance(given, dict) else given
    config = parse(InferConfig, section, f"{path}: infer")
    post = dict(DEFAULT_POST)
    for name, values in section["post"].items():
        # keys given override the class's defaults (roads keep their centerlines unless told otherwise)
        parsed = config.post[name]
        post[name] = dataclasses.replace(post.get(name, ClassPost()), **{k: getattr(parsed, k) for k in values})
    return dataclasses.replace(config, post=post)


@dataclass
class _Doc:
    """Top-level keys a pipeline file may hold; ``train`` is read by the trainer."""

    __pydantic_config__ = SCHEMA

    name: str = ""
    description: str = ""
    infer: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
