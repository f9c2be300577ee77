"""``geoseg train``: a thin wrapper over :func:`geoseg.train.train`."""

from __future__ import annotations

import json
from typing import Any

import click

from geoseg.cli.options import quiet_opt, user_errors, verbose_opt


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue exactly from the run's last checkpoint (every epoch).")
@click.option("--steps", type=int, help="Override the recipe's number of optimiser steps.")
@click.option("--out", help="Override where the bundle is written.")
@click.option("--run-dir", help="Override where the checkpoint, metrics.jsonl and curves.png go.")
@click.option("--device", help="Override the recipe's device (auto, cpu, cuda[:N]).")
@verbose_opt
@quiet_opt
@user_errors
def train(pipeline: str, resume: bool, steps: int | None, out: str | None, run_dir: str | None, device: str | None,
          verbose: int, quiet: bool) -> None:
    """Train a model from a pipeline recipe (pipelines/*.yaml) and write its bundle.

    Every epoch (train.epoch_steps) the bundle and a checkpoint are written atomically and, when there is
    validation data, the model is scored through the tiled infer path; see RUN_DIR/metrics.jsonl and curves.png.
    """
    import dataclasses

    from geoseg.train import load_train_config
    from geoseg.train import train as run

    cfg = load_train_config(pipeline)
    changes: dict[str, Any] = {"steps": steps, "out": out, "run_dir": run_dir, "device": device}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    path = run(cfg, resume=resume, progress=not quiet,
               log=None if quiet else lambda rec: click.echo(json.dumps(_rounded(rec)), err=True))
    if not quiet:
        click.echo(f"wrote {path} (log and curves in {cfg.resolved_run_dir})", err=True)


def _rounded(rec: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}
