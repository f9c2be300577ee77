"""``geoseg bench train``: training throughput (samples/s) of the real loop, its sampler and its model step."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geoseg.predict import cpu_count, resolve_device
from geoseg.train.config import SynthData, load_train_config
from geoseg.train.data import Region, WindowSampler
from geoseg.train.loop import synth_scenes, to_tensors, train
from geoseg.train.losses import MultitaskLoss
from geoseg.models.registry import build_model


def bench_train(recipe: str | Path, steps: int = 10, batch_size: int | None = None, window: int | None = None,
                device: str = "auto", threads: int | None = None, size: int = 512) -> dict:
    """Samples/s of the whole loop (sampling + augmentation + forward/backward + optimiser) on one synthetic
    scene, and of its two halves alone: the window sampler, and the model step on ready tensors (bf16 autocast
    on CUDA)."""
    cfg = load_train_config(recipe)
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-train-") as tmp:
        cfg = dataclasses.replace(
            cfg, synth=SynthData(count=1, size=size, seed=cfg.synth.seed if cfg.synth else 1000), data=None,
            data_dir=tmp, run_dir=f"{tmp}/run", out=f"{tmp}/bench.safetensors", steps=steps, epoch_steps=steps,
            log_every=steps, device=str(dev), batch_size=batch_size or cfg.batch_size, window=window or cfg.window,
            threads=threads or cfg.threads)
        n_threads = cfg.threads or cpu_count()
        scenes, regions, _ = synth_scenes(cfg)
        sampler = WindowSampler(scenes, regions or [Region(0, 0, 0, size, size)], cfg, seed=0)
        t0 = time.perf_counter()
        batches = [sampler.batch(k, cfg.batch_size) for k in range(3)]
        sampler_rate = 3 * cfg.batch_size / (time.perf_counter() - t0)
        model_rate = _model_rate(cfg, dev, batches, steps, n_threads)
        records: list[dict] = []
        t0 = time.perf_counter()
        train(cfg, log=records.append)
        wall = time.perf_counter() - t0
    return {"device": str(dev), "amp": "bf16" if dev.type == "cuda" and cfg.amp else "fp32", "arch": cfg.arch,
            "threads": n_threads if dev.type == "cpu" else None, "window": cfg.window, "batch_size": cfg.batch_size,
            "steps": steps, "loop_samples_per_s": round(records[-1]["samples_per_s"], 2),
            "sampler_samples_per_s": round(sampler_rate, 2), "model_samples_per_s": round(model_rate, 2),
            "run_wall_s": round(wall, 2)}


def _model_rate(cfg, dev: torch.device, batches: list[dict], steps: int, threads: int) -> float:
    """Forward + backward + AdamW step on ready batches: the bound the loop would reach with a free sampler."""
    torch.set_num_threads(threads)
    args = dict(cfg.arch_args)
    args.setdefault("classes", cfg.n_classes + sum(c for _, c in cfg.head_channels()))
    model = build_model(cfg.arch, **args).to(dev).train()
    cuda = dev.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = MultitaskLoss(cfg)
    ready = [to_tensors(b, cfg, dev) for b in batches]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.amp else torch.autocast("cpu", enabled=False)

    def step(i: int) -> None:
        x, targets = ready[i % len(ready)]
        with amp:
            out = model(x.contiguous(memory_format=torch.channels_last) if cuda else x)
        loss, _ = loss_fn(out, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)  # warm-up (allocations, cuDNN autotuning)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0) if steps else float(np.nan)
