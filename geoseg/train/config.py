"""Typed training config, read from a pipeline YAML's ``train`` section with ``yaml.safe_load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError
from geoseg.pipeline import check_keys, read_yaml


@dataclass(frozen=True)
class SynthData:
    """Synthetic training scenes made by ``geoseg synth`` (seeds ``seed .. seed+count-1``)."""

    count: int = 6
    size: int = 1024
    seed: int = 1000
    density: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: model, data, sampling, schedule and the bundle it writes."""

    out: str
    arch: str = "smp:Unet"
    arch_args: dict[str, Any] = field(default_factory=dict)
    classes: tuple[dict[str, str], ...] = ()
    synth: SynthData | None = None
    data_dir: str = "runs/data"
    window: int = 256
    batch_size: int = 8
    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    positive_fraction: float = 0.6
    augment: tuple[str, ...] = ("flip", "rot90", "colour")
    tile: int = 512
    halo: int = 64
    stride: int = 32
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    gsd: float = 0.5
    seed: int = 0
    half: bool = True
    log_every: int = 50
    recipe: str = ""  # the pipeline file this came from (set by the loader; recorded in the bundle)
    save_every: int = 100  # a bundle is written (atomically) this often, so a long run can be used early


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate the ``train`` section of a pipeline; unknown keys fail with the valid ones."""
    raw = read_yaml(path).get("train")
    if not raw:
        raise ConfigError(f"{path}: has no 'train' section; see pipelines/default.yaml")
    raw = check_keys(TrainConfig, raw, f"{path}: train")
    if raw.get("synth") is not None:
        raw["synth"] = SynthData(**check_keys(SynthData, raw["synth"], f"{path}: train.synth"))
    for key in ("classes", "augment", "mean", "std"):
        if key in raw:
            raw[key] = tuple(raw[key])
    raw.setdefault("recipe", str(path))
    try:
        return TrainConfig(**raw)
    except TypeError as err:
        raise ConfigError(f"{path}: train: {err}") from None
