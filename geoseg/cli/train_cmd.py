"""``geoseg train``: a thin wrapper over :func:`geoseg.train.train`."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import quiet_opt, user_errors, verbose_opt


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--steps", type=int, help="Override the recipe's number of optimiser steps.")
@click.option("--out", help="Override where the bundle is written.")
@verbose_opt
@quiet_opt
@user_errors
def train(pipeline: str, steps: int | None, out: str | None, verbose: int, quiet: bool) -> None:
    """Train a model from a pipeline recipe (pipelines/*.yaml) and write its bundle."""
    import dataclasses

    from geoseg.train import load_train_config
    from geoseg.train import train as run

    cfg = load_train_config(pipeline)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in {"steps": steps, "out": out}.items() if v is not None})
    path = run(cfg, log=None if quiet else lambda rec: click.echo(json.dumps(rec), err=True))
    if not quiet:
        click.echo(f"wrote {path}", err=True)
