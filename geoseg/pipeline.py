"""Pipelines: YAML recipes loaded with ``yaml.safe_load`` into typed, validated dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError


@dataclass(frozen=True)
class ClassPost:
    """Post-processing for one class's vectors."""

    min_area_m2: float = 4.0
    simplify_m: float = 0.25


@dataclass(frozen=True)
class InferConfig:
    """Everything ``geoseg infer`` needs besides the scene and the output paths."""

    model: str | None = None
    tile: int | None = None          # default: the bundle's
    halo: int | None = None          # default: the bundle's recommended halo
    block_size: int | None = None    # default: auto, up to 1536 px, several blocks per worker
    batch_size: int = 4
    device: str = "auto"
    workers: int | None = None       # default: one per core
    scheduler: str = "threads"
    classes: tuple[str, ...] | None = None   # default: every non-background class
    post: dict[str, ClassPost] = field(default_factory=dict)

    def post_for(self, name: str) -> ClassPost:
        return self.post.get(name, ClassPost())

    def replace(self, **changes: Any) -> "InferConfig":
        """A copy with the non-None ``changes`` applied (CLI options override the pipeline)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return raw


def load_pipeline(path: str | Path) -> InferConfig:
    """Read a pipeline YAML (only its ``infer`` section matters here) into an :class:`InferConfig`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: pipeline file not found; check the path (recipes are in pipelines/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    section = _build(_Doc, raw, str(path)).get("infer", {})
    section = dict(_build(InferConfig, section, f"{path}: infer"))
    post = {}
    for name, values in (section.pop("post", None) or {}).items():
        post[name] = ClassPost(**_build(ClassPost, values, f"{path}: infer.post.{name}"))
    if "classes" in section and section["classes"] is not None:
        section["classes"] = tuple(section["classes"])
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
