"""The training loop: sampled windows → model → losses → AdamW (clipped; one-cycle or cosine) → every epoch a
bundle, validation through the tiled ``infer`` path, a checkpoint for ``--resume``, the metrics log and plot."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
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
    threads = cfg.threads or cpu_count()
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    scenes, train_regions, val_regions = synth_scenes(cfg) if cfg.synth else user_scenes(cfg)
    sampler = WindowSampler(scenes, train_regions, cfg, seed=cfg.seed)
    expected = cfg.n_classes + sum(c for _, c in cfg.head_channels())
    args = dict(cfg.arch_args)
    if cfg.arch.startswith("smp:") and args.setdefault("classes", expected) != expected:
        raise ConfigError(f"{cfg.recipe}: train.arch_args.classes is {args['classes']} but {cfg.n_classes} classes "
                          f"+ heads {list(cfg.head_channels())} need {expected} output channels")
    cfg = type(cfg)(**{**cfg.__dict__, "arch_args": args})
    model = build_model(cfg.arch, **args)
    if cfg.init and not resume:  # a resumed run restores its own weights
        warm_start(model, cfg)
    model = model.to(device)
    cuda = device.type == "cuda"
    loader_threads = cfg.loader_threads or (min(8, cpu_count()) if cuda else 1)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = MultitaskLoss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_schedule(cfg, opt)
    run_dir = cfg.resolved_run_dir
    start_step = 0
    if resume:
        start_step = _restore(load_state(run_dir), cfg, model, opt, sched)
    runlog = RunLog(run_dir, start_step if resume else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else nullcontext()
    fingerprint = data_fingerprint(scenes)
    model.train()
    start, running = time.perf_counter(), []
    with step_progress(cfg.steps, start_step, progress) as bar:
        for step in range(start_step + 1, cfg.steps + 1):
            x, targets = to_tensors(sampler.batch(step, cfg.batch_size, loader_threads), cfg, device)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = model(x)
            if out.shape[1] != expected:
                raise ConfigError(f"{cfg.recipe}: model {cfg.arch} returns {out.shape[1]} channels; classes + heads "
                                  f"need {expected}; fix train.arch_args")
            loss, parts = loss_fn(out, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            sched.step()
            running.append(parts)
            bar(step, f"loss {loss.item():.3f}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"kind": "train", "step": step, "loss": float(np.mean([sum(p.values()) for p in running])),
                       **{k: float(np.mean([p[k] for p in running])) for k in running[0]},
                       "lr": sched.get_last_lr()[0],
                       "samples_per_s": (step - start_step) * cfg.batch_size / (time.perf_counter() - start)}
                runlog.write(rec)
                running = []
                if log:
                    log(rec)
            if step % cfg.epoch_steps == 0 or step == cfg.steps:
                _end_epoch(cfg, step, model, opt, sched, scenes, val_regions, device, runlog,
                                      fingerprint, time.perf_counter() - start, log)
                torch.set_num_threads(threads)  # inference set its own thread count in this thread
                model.train()
    if start_step == cfg.steps and _bundle_step(cfg) != cfg.steps:  # resumed after the last bundle failed to save
        _end_epoch(cfg, cfg.steps, model, opt, sched, scenes, val_regions, device, runlog, fingerprint, 0.0, log)
    return Path(cfg.out)


def _end_epoch(cfg: TrainConfig, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler, scenes: list[LabelledScene],
               val_regions: list[Region], device: torch.device, runlog: RunLog, fingerprint: str, seconds: float,
               log: Callable[[dict], None] | None) -> dict:
    """Checkpoint first (so no later failure loses the epoch), then validate with the tiled infer path, write the
    bundle (atomic) and redraw the plot."""
    resume_hint = f"the epoch is saved in {cfg.resolved_run_dir}: fix it and continue with 'geoseg train " \
                  f"{cfg.recipe} --resume'"
    try:
        save_state(cfg.resolved_run_dir, {
            "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "recipe": _recipe_key(cfg)})
    except _SAVE_ERRORS as err:
        raise OutputError(f"{cfg.resolved_run_dir}: could not write the checkpoint of step {step} "
                          f"({_reason(err)}); free space or fix the folder, then resume") from None
    model.eval()
    scores: dict = {}
    if val_regions:
        meta = bundle_meta(cfg, {"recipe": cfg.recipe, "steps": step})
        scores = validate(model, meta, scenes, val_regions, device.type, cfg.resolved_run_dir)
        rec = {"kind": "val", "step": step, **scores}
        runlog.write(rec)
        if log:
            log(rec)
    provenance = {"recipe": cfg.recipe, "steps": step, "init": cfg.init, "seconds": round(seconds, 1),
                  "synth": json.dumps(cfg.synth.__dict__ if cfg.synth else None),
                  "data": json.dumps([s.__dict__ for s in cfg.data.scenes] if cfg.data else None),
                  "data_fingerprint": fingerprint, "validation": json.dumps(scores)}
    try:
        save_bundle(cfg.out, model, bundle_meta(cfg, provenance), half=cfg.half)
    except _SAVE_ERRORS as err:
        raise OutputError(f"{cfg.out}: could not write the bundle ({_reason(err)}); {resume_hint}") from None
    plot_curves(runlog.records(), cfg.resolved_run_dir / PLOT_FILE)
    return scores


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
