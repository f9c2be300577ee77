"""The training loop: sampled windows → model → losses → AdamW (clipped; one-cycle or cosine) → every epoch a
bundle, validation through the tiled ``infer`` path, a checkpoint for ``--resume``, the metrics log and plot."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError

from geoseg.errors import ConfigError, GeosegError, OutputError
from geoseg.models.bundle import BundleMeta, ClassInfo, save_bundle
from geoseg.models.registry import build_model
from geoseg.predict import cpu_count, resolve_device
from geoseg.scene import normalise
from geoseg.train.checkpoint import load_state, save_state
from geoseg.train.config import TrainConfig
from geoseg.train.data import LabelledScene, Region, WindowSampler, load_scene, split_regions
from geoseg.train.losses import MultitaskLoss
from geoseg.train.outputs import check_outputs
from geoseg.train.synth_data import make_synth_scenes
from geoseg.train.runlog import PLOT_FILE, RunLog, plot_curves, step_progress
from geoseg.train.validate import validate


def synth_scenes(cfg: TrainConfig) -> tuple[list[LabelledScene], list[Region], list[Region]]:
    """Make (once, cached by generator source) and load the synthetic scenes; the last ``val_count`` validate."""
    assert cfg.synth is not None
    scenes = [load_scene(image, cfg, labels=str(truth)) for image, truth in make_synth_scenes(cfg)]
    regions = [Region(i, 0, 0, sc.height, sc.width) for i, sc in enumerate(scenes)]
    return scenes, regions[:cfg.synth.count], regions[cfg.synth.count:]


def user_scenes(cfg: TrainConfig) -> tuple[list[LabelledScene], list[Region], list[Region]]:
    """The user's scenes and labels, split into training and validation regions."""
    assert cfg.data is not None
    if not cfg.data.scenes:
        raise ConfigError(f"{cfg.recipe}: train.data.scenes is empty; list your GeoTIFFs and their labels")
    scenes = [load_scene(s.image, cfg, s.labels, s.label_raster) for s in cfg.data.scenes]
    return (scenes, *split_regions(scenes, cfg.data, tuple(s.split for s in cfg.data.scenes)))


def data_fingerprint(scenes: list[LabelledScene]) -> str:
    """SHA-256 over the training scenes' image files, so a bundle names the pixels it learnt from."""
    digest = hashlib.sha256()
    for scene in scenes:
        with open(scene.image, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def bundle_meta(cfg: TrainConfig, provenance: dict) -> BundleMeta:
    """The metadata the trained bundle carries, so inference needs nothing but the file."""
    classes = tuple(ClassInfo(**c) for c in cfg.classes)
    n = len(cfg.band_indexes)
    names = ("red", "green", "blue") if n == 3 else tuple(f"b{i}" for i in cfg.band_indexes)
    return BundleMeta(arch=cfg.arch, arch_args=dict(cfg.arch_args), classes=classes, band_names=names,
                      band_indexes=cfg.band_indexes, mean=cfg.mean, std=cfg.std, gsd=cfg.gsd, tile=cfg.tile,
                      halo=cfg.halo, stride=cfg.stride, activation=cfg.activation, heads=cfg.head_channels(),
                      provenance=provenance)


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 1e-2)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)


def warm_start(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start from the weights of bundle ``cfg.init`` (fp16 bundles are cast back): same tensors or a clear error."""
    from geoseg.models.bundle import load_bundle

    state = {k: v.float() for k, v in load_bundle(cfg.init).model.state_dict().items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{cfg.recipe}: train.init: {cfg.init} does not fit this recipe's model (same arch, "
                          f"arch_args, classes and heads needed): {str(err).splitlines()[0]}") from None


def to_tensors(batch: dict[str, np.ndarray], cfg: TrainConfig, device: torch.device
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Inputs normalised by inference's own function (nodata included) and the targets, on the device."""
    img = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).to(device)
    x = np.stack([normalise(np.moveaxis(im, -1, 0), ok, 1.0, cfg.mean, cfg.std)
                  for im, ok in zip(batch["image"], batch["valid"])])
    targets = {"mask": torch.from_numpy(batch["mask"]).long().to(device), "colour": img}
    for key in ("boundary", "distance"):
        if key in batch:
            targets[key] = torch.from_numpy(batch[key]).float().to(device)
    return torch.from_numpy(x).to(device), targets


def train(cfg: TrainConfig, *, resume: bool = False, log: Callable[[dict], None] | None = None,
          progress: bool = False) -> Path:
    """Train from scratch (no downloaded weights) or resume exactly; writes the bundle to ``cfg.out``."""
    check_outputs(cfg)
    torch.manual_seed(cfg.seed)
    # this thread's count (OpenMP is per thread); validation's predicting threads set their own, not this one
    torch.set_num_threads(cfg.threads or cpu_count())
    run = _setup(cfg, resume, log)
    run.model.train()
    start, running = time.perf_counter(), []
    with step_progress(cfg.steps, run.start_step, progress) as bar:
        for step in range(run.start_step + 1, cfg.steps + 1):
            loss, parts = run.step(step)
            running.append(parts)
            bar(step, f"loss {loss:.3f}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.report(step, running, time.perf_counter() - start)
                running = []
            if step % cfg.epoch_steps == 0 or step == cfg.steps:
                run.end_epoch(step, time.perf_counter() - start)
                run.model.train()
    if run.start_step == cfg.steps and _bundle_step(cfg) != cfg.steps:  # resumed after the last bundle failed to save
        run.end_epoch(cfg.steps, 0.0)
    return Path(cfg.out)


@dataclass
class _Run:
    """One training run's state between steps: the model and its optimiser, the data and where records go."""

    cfg: TrainConfig  # with ``arch_args.classes`` filled in (see :func:`_model_config`)
    device: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loss_fn: MultitaskLoss
    sampler: WindowSampler
    scenes: list[LabelledScene]
    val_regions: list[Region]
    runlog: RunLog
    fingerprint: str
    start_step: int
    log: Callable[[dict], None] | None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @cached_property
    def loader_threads(self) -> int:
        return self.cfg.loader_threads or (min(8, cpu_count()) if self.cuda else 1)

    @cached_property
    def channels(self) -> int:
        """The output channels the model must return: classes, then heads."""
        return self.cfg.n_classes + sum(c for _, c in self.cfg.head_channels())

    def step(self, step: int) -> tuple[float, dict[str, float]]:
        """One optimiser step on the batch of ``step``: (loss, its parts)."""
        cfg = self.cfg
        x, targets = to_tensors(self.sampler.batch(step, cfg.batch_size, self.loader_threads), cfg, self.device)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda and cfg.amp else nullcontext():
            out = self.model(x)
        if out.shape[1] != self.channels:
            raise ConfigError(f"{cfg.recipe}: model {cfg.arch} returns {out.shape[1]} channels; classes + heads "
                              f"need {self.channels}; fix train.arch_args")
        loss, parts = self.loss_fn(out, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.opt.step()
        self.sched.step()
        return loss.item(), parts

    def report(self, step: int, running: list[dict[str, float]], seconds: float) -> None:
        """The mean loss (and its parts) of the steps since the last record, to the log and the callback."""
        rec = {"kind": "train", "step": step, "loss": float(np.mean([sum(p.values()) for p in running])),
               **{k: float(np.mean([p[k] for p in running])) for k in running[0]},
               "lr": self.sched.get_last_lr()[0],
               "samples_per_s": (step - self.start_step) * self.cfg.batch_size / seconds}
        self._record(rec)

    def _record(self, rec: dict) -> None:
        self.runlog.write(rec)
        if self.log:
            self.log(rec)

    def end_epoch(self, step: int, seconds: float) -> dict:
        """Checkpoint first (so no later failure loses the epoch), then validate with the tiled infer path, write
        the bundle (atomic) and redraw the plot."""
        cfg, model = self.cfg, self.model
        try:
            save_state(cfg.resolved_run_dir, {
                "step": step, "model": model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(), "recipe": _recipe_key(cfg)})
        except _SAVE_ERRORS as err:
            raise OutputError(f"{cfg.resolved_run_dir}: could not write the checkpoint of step {step} "
                              f"({_reason(err)}); free space or fix the folder, then resume") from None
        model.eval()
        scores: dict = {}
        if self.val_regions:
            meta = bundle_meta(cfg, {"recipe": cfg.recipe, "steps": step})
            scores = validate(model, meta, self.scenes, self.val_regions, self.device.type, cfg.resolved_run_dir)
            self._record({"kind": "val", "step": step, **scores})
        provenance = {"recipe": cfg.recipe, "steps": step, "init": cfg.init, "seconds": round(seconds, 1),
                      "synth": json.dumps(cfg.synth.__dict__ if cfg.synth else None),
                      "data": json.dumps([s.__dict__ for s in cfg.data.scenes] if cfg.data else None),
                      "data_fingerprint": self.fingerprint, "validation": json.dumps(scores)}
        try:
            save_bundle(cfg.out, model, bundle_meta(cfg, provenance), half=cfg.half)
        except _SAVE_ERRORS as err:
            raise OutputError(f"{cfg.out}: could not write the bundle ({_reason(err)}); the epoch is saved in "
                              f"{cfg.resolved_run_dir}: fix it and continue with 'geoseg train {cfg.recipe} "
                              "--resume'") from None
        plot_curves(self.runlog.records(), cfg.resolved_run_dir / PLOT_FILE)
        return scores


def _setup(cfg: TrainConfig, resume: bool, log: Callable[[dict], None] | None) -> _Run:
    """Data, model (warm-started or restored), optimiser, schedule and run log, in the order the seeds expect."""
    device = resolve_device(cfg.device)
    scenes, train_regions, val_regions = synth_scenes(cfg) if cfg.synth else user_scenes(cfg)
    sampler = WindowSampler(scenes, train_regions, cfg, seed=cfg.seed)
    cfg = _model_config(cfg)
    model = build_model(cfg.arch, **cfg.arch_args)
    if cfg.init and not resume:  # a resumed run restores its own weights
        warm_start(model, cfg)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = MultitaskLoss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_schedule(cfg, opt)
    start_step = _restore(load_state(cfg.resolved_run_dir), cfg, model, opt, sched) if resume else 0
    runlog = RunLog(cfg.resolved_run_dir, start_step if resume else None)
    return _Run(cfg, device, model, opt, sched, loss_fn, sampler, scenes, val_regions, runlog,
                data_fingerprint(scenes), start_step, log)


def _model_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with smp's ``classes`` argument set to the class + head channels (a different one is an error)."""
    expected = cfg.n_classes + sum(c for _, c in cfg.head_channels())
    args = dict(cfg.arch_args)
    if cfg.arch.startswith("smp:") and args.setdefault("classes", expected) != expected:
        raise ConfigError(f"{cfg.recipe}: train.arch_args.classes is {args['classes']} but {cfg.n_classes} classes "
                          f"+ heads {list(cfg.head_channels())} need {expected} output channels")
    return type(cfg)(**{**cfg.__dict__, "arch_args": args})


_SAVE_ERRORS = (OSError, SafetensorError)  # safetensors reports a failed write as its own error type


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).split(" at path ")[0]


def _bundle_step(cfg: TrainConfig) -> int | None:
    """The step the bundle at ``cfg.out`` was written at (None: no readable bundle there)."""
    from geoseg.models.bundle import read_meta

    try:
        return int(read_meta(cfg.out).provenance.get("steps", -1))
    except GeosegError:  # a missing or unreadable bundle is rewritten from the checkpoint
        return None


def _recipe_key(cfg: TrainConfig) -> str:
    """What must not change between a run and its resume (everything but the recipe path itself)."""
    free = ("recipe", "log_every", "loader_threads")  # batches do not depend on the loader threads
    return json.dumps({k: v for k, v in cfg.__dict__.items() if k not in free}, sort_keys=True, default=str)


def _restore(state: dict, cfg: TrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> int:
    if state["recipe"] != _recipe_key(cfg):
        raise ConfigError(f"{cfg.resolved_run_dir}: the checkpoint was written by a different recipe; resume with "
                          "the same pipeline (and options), or start again without --resume")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])
