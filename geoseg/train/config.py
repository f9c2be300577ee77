"""Typed training config, read from a pipeline YAML's ``train`` section with ``yaml.safe_load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError
from geoseg.pipeline import SCHEMA, parse, read_yaml

LOSSES = ("ce", "bce", "dice", "jaccard", "lovasz", "focal", "tversky", "tanimoto", "ohem")
HEAD_LOSSES = ("bce", "mse", "l1", "tanimoto", "dice")
HEAD_KINDS = ("boundary", "distance", "colour")
AUGMENTS = ("flip", "rot90", "scale_rotate", "colour", "blur", "noise", "gamma", "gray", "channel_shuffle",
            "downscale")
SCHEDULES = ("onecycle", "cosine")


@dataclass(frozen=True)
class SynthData:
    """Synthetic training scenes made by ``geoseg synth`` (seeds ``seed .. seed+count-1``)."""

    __pydantic_config__ = SCHEMA

    count: int = 6
    size: int = 1024
    seed: int = 1000
    density: float = 1.0
    val_count: int = 0  # further scenes (seeds after the training ones) held out for validation
    look: str = "classic"  # geoseg.synth look per scene; "random" draws one per seed from the training looks
    gsd: tuple[float, ...] = ()  # [lo, hi] metres: each seed rendered at its own GSD, resampled to train.gsd


@dataclass(frozen=True)
class SceneSource:
    """One labelled scene: a GeoTIFF plus vector labels (any OGR source) or a label raster."""

    __pydantic_config__ = SCHEMA

    image: str
    labels: str = ""        # vector source: one layer per class (ClassInfo.layer) or one layer + class_field
    label_raster: str = ""  # or a raster of class ids (any grid/CRS: warped to the scene's, nearest)
    split: str = ""         # "", "train" or "val": pins the scene when the split is by scene


@dataclass(frozen=True)
class DataConfig:
    """The user's own data and how it is split into training and validation regions."""

    __pydantic_config__ = SCHEMA

    scenes: tuple[SceneSource, ...] = ()
    layer: str = ""          # with class_field: the one layer holding every class
    class_field: str = ""    # attribute naming the class (values = class names); "" = one layer per class
    split: str = "scene"     # "scene" or "blocks"
    val_fraction: float = 0.2
    block: int = 1024        # split block side in pixels (split: blocks); windows never cross a block
    split_seed: int = 0


@dataclass(frozen=True)
class HeadConfig:
    """An extra output head trained on a target generated from the labels."""

    __pydantic_config__ = SCHEMA

    name: str
    kind: str = ""            # boundary, distance or colour (default: the name)
    loss: str = "bce"
    weight: float = 1.0
    shared_weight: float = 1.0  # boundary heads: loss weight on walls shared by touching objects (U-Net's w(x))

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: model, data, sampling, augmentation, losses, schedule and the bundle it writes."""

    __pydantic_config__ = SCHEMA

    out: str
    arch: str = "smp:Unet"
    arch_args: dict[str, Any] = field(default_factory=dict)
    classes: tuple[dict[str, str], ...] = ()
    synth: SynthData | None = None
    data: DataConfig | None = None
    data_dir: str = "runs/data"
    run_dir: str = ""        # checkpoint, metrics log and plot (default: runs/<bundle stem>)
    window: int = 256
    batch_size: int = 8
    steps: int = 1000
    epoch_steps: int = 100   # a bundle + checkpoint is written (and validation runs) every this many steps
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    clip: float = 5.0        # gradient norm clip (0: off)
    amp: bool = True         # bf16 autocast on CUDA (ignored on CPU)
    device: str = "auto"
    threads: int = 0         # torch threads on CPU (0: every core; 1 is faster on a machine shared with others)
    loader_threads: int = 0  # threads drawing windows (0: 1 on CPU, where the cores train; up to 8 on CUDA)
    positive_fraction: float = 0.6
    min_valid: float = 0.5   # windows with less valid (non-nodata) area are redrawn
    augment: dict[str, dict[str, Any]] = field(default_factory=lambda: {"flip": {}, "rot90": {}, "colour": {}})
    loss: dict[str, Any] = field(default_factory=lambda: {"ce": 1.0, "dice": 1.0})
    heads: tuple[HeadConfig, ...] = ()
    boundary_px: int = 2     # half-width of the boundary band
    label_margin: int = 64   # labels are rasterised this far around a window so cut objects keep their shape
    activation: str = "softmax"
    tile: int = 512
    halo: int = 64
    stride: int = 32
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    band_indexes: tuple[int, ...] = (1, 2, 3)
    gsd: float = 0.5
    seed: int = 0
    half: bool = True
    log_every: int = 50
    init: str = ""    # a bundle of the same architecture, classes and heads to start from (fine-tuning)
    recipe: str = ""  # the pipeline file this came from (set by the loader; recorded in the bundle)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def head_channels(self) -> tuple[tuple[str, int], ...]:
        """``BundleMeta.heads`` for this recipe: colour heads reconstruct every band."""
        return tuple((h.name, len(self.band_indexes) if h.kind == "colour" else 1) for h in self.heads)

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{Path(self.out).stem}")


def _names(value: Any, valid: tuple[str, ...], where: str, *, weights: bool) -> dict[str, Any]:
    """A list of names, an ``a+b`` string or a mapping name -> value; unknown names fail with the valid ones."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split("+") if v.strip()]
    if isinstance(value, (list, tuple)):
        value = {v: (1.0 if weights else {}) for v in value}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected a list or mapping of {', '.join(valid)}")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
    for name, v in value.items():
        if weights and not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{name}: weight must be a number, got {v!r}")
        if not weights and not isinstance(v, dict | None):
            raise ConfigError(f"{where}.{name}: expected a mapping of albumentations arguments, got {v!r}")
    return {k: (float(v) if weights else dict(v or {})) for k, v in value.items()}


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate the ``train`` section of a pipeline; unknown keys or names fail with the valid ones."""
    raw = read_yaml(path).get("train")
    if not raw:
        raise ConfigError(f"{path}: has no 'train' section; see pipelines/default.yaml")
    raw = dict(raw)
    # loss and augment also take the short forms `ce+dice` and `[flip, rot90]`: normalised before the schema
    if "loss" in raw:
        raw["loss"] = _names(raw["loss"], LOSSES, f"{path}: train.loss", weights=True)
    if "augment" in raw:
        raw["augment"] = _names(raw["augment"], AUGMENTS, f"{path}: train.augment", weights=False) \
            if raw["augment"] else {}
    raw.setdefault("recipe", str(path))
    cfg = parse(TrainConfig, raw, f"{path}: train")
    if cfg.synth is None and cfg.data is None:
        raise ConfigError(f"{path}: train needs 'data' (your scenes and labels) or 'synth'; "
                          "see pipelines/train-user-data.yaml")
    if cfg.synth is not None:
        from geoseg.synth.looks import LOOK_NAMES

        gsd = cfg.synth.gsd
        if gsd and (len(gsd) != 2 or not 0 < gsd[0] <= gsd[1]):
            raise ConfigError(f"{path}: train.synth.gsd must be [lo, hi] metres with 0 < lo <= hi")
        if cfg.synth.look not in LOOK_NAMES:
            raise ConfigError(f"{path}: train.synth.look: unknown {cfg.synth.look!r}; valid: {', '.join(LOOK_NAMES)}")
    for i, h in enumerate(cfg.heads):
        if h.kind not in HEAD_KINDS or h.loss not in HEAD_LOSSES:
            raise ConfigError(f"{path}: train.heads[{i}]: kind must be one of {', '.join(HEAD_KINDS)} and loss "
                              f"one of {', '.join(HEAD_LOSSES)}, got {h.kind!r} / {h.loss!r}")
    if cfg.init and not Path(cfg.init).is_file():
        raise ConfigError(f"{path}: train.init: {cfg.init} not found; train that bundle first or drop init")
    for key, valid in (("schedule", SCHEDULES), ("activation", ("softmax", "sigmoid"))):
        if getattr(cfg, key) not in valid:
            raise ConfigError(f"{path}: train.{key}: unknown {getattr(cfg, key)!r}; valid: {', '.join(valid)}")
    if len(cfg.classes) < 2 or any("name" not in c for c in cfg.classes):
        raise ConfigError(f"{path}: train.classes needs background plus at least one class, each with a name")
    if cfg.epoch_steps < 1 or cfg.steps < 1 or cfg.window < 32:
        raise ConfigError(f"{path}: train: steps and epoch_steps must be >= 1 and window >= 32")
    return cfg
