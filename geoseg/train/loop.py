"""The training loop: sampled windows → model → CE + Dice → AdamW with one-cycle → a bundle."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from geoseg.models.bundle import BundleMeta, ClassInfo, save_bundle
from geoseg.models.registry import build_model
from geoseg.predict import cpu_count
from geoseg import synth as synth_module
from geoseg.synth import SynthSpec, write_scene
from geoseg.train.config import TrainConfig
from geoseg.train.data import LabelledScene, WindowSampler, load_scene


def synth_scenes(cfg: TrainConfig) -> list[LabelledScene]:
    """Make (once) and load the synthetic training scenes the config asks for."""
    assert cfg.synth is not None
    folder = Path(cfg.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    # the generator's source is part of the cache key, so a changed look never reuses stale scenes
    sources = sorted(Path(synth_module.__file__).parent.glob("*.py"))  # every module of the geoseg.synth package
    code = hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:8]
    for seed in range(cfg.synth.seed, cfg.synth.seed + cfg.synth.count):
        image = folder / f"synth_{seed}_{cfg.synth.size}_{code}.tif"
        truth = folder / f"synth_{seed}_{cfg.synth.size}_{code}_truth.gpkg"
        if not (image.exists() and truth.exists()):
            spec = SynthSpec(cfg.synth.size, cfg.synth.size, seed=seed, density=cfg.synth.density, gsd=cfg.gsd)
            write_scene(spec, image, truth, overwrite=True)
        scenes.append(load_scene(image, truth))
    return scenes


def data_fingerprint(scenes: list[LabelledScene]) -> str:
    """SHA-256 over the training scenes' image files, so a bundle names the pixels it learnt from."""
    digest = hashlib.sha256()
    for scene in scenes:
        digest.update(scene.image.read_bytes())
    return digest.hexdigest()[:16]


def bundle_meta(cfg: TrainConfig, provenance: dict) -> BundleMeta:
    """The metadata the trained bundle carries, so inference needs nothing but the file."""
    classes = tuple(ClassInfo(**c) for c in cfg.classes)
    return BundleMeta(arch=cfg.arch, arch_args=dict(cfg.arch_args), classes=classes, mean=cfg.mean, std=cfg.std,
                      gsd=cfg.gsd, tile=cfg.tile, halo=cfg.halo, stride=cfg.stride, provenance=provenance)


def train(cfg: TrainConfig, *, log: Callable[[dict], None] | None = None) -> Path:
    """Train from scratch (no downloaded weights) and write the bundle to ``cfg.out``."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cpu_count())
    rng = np.random.default_rng(cfg.seed)
    scenes = synth_scenes(cfg)
    sampler = WindowSampler(scenes, cfg, rng)
    model = build_model(cfg.arch, **cfg.arch_args)
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss("multiclass")
    ce = torch.nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    model.train()
    start, running = time.perf_counter(), []
    for step in range(1, cfg.steps + 1):
        img, mask = sampler.batch(cfg.batch_size)
        x = (torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        y = torch.from_numpy(mask).long()
        logits = model(x)
        loss = ce(logits, y) + dice(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            save_bundle(cfg.out, model, bundle_meta(cfg, {"recipe": cfg.recipe, "steps": step}), half=cfg.half)
        if log and (step % cfg.log_every == 0 or step == cfg.steps):
            log({"step": step, "loss": float(np.mean(running)), "lr": sched.get_last_lr()[0],
                 "samples_per_s": step * cfg.batch_size / (time.perf_counter() - start)})
            running = []
    model.eval()
    provenance = {"recipe": cfg.recipe, "steps": cfg.steps, "seconds": round(time.perf_counter() - start, 1),
                  "synth": json.dumps(cfg.synth.__dict__ if cfg.synth else None),
                  "data_fingerprint": data_fingerprint(scenes)}
    return save_bundle(cfg.out, model, bundle_meta(cfg, provenance), half=cfg.half)
