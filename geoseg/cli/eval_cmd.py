"""``geoseg eval``: score a prediction against vector ground truth; prints JSON."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import user_errors, verbose_opt


@click.command("eval")
@click.option("--raster", "raster", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Predicted class raster (from infer --raster-out).")
@click.option("--pred", type=click.Path(exists=True, dir_okay=False), help="Predicted GeoPackage (from infer --out).")
@click.option("--truth", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Ground truth GeoPackage with layers buildings and roads.")
@verbose_opt
@user_errors
def eval_cmd(raster: str, pred: str | None, truth: str, verbose: int) -> None:
    """Pixel IoU/precision/recall/F1 per class and the SpaceNet building F1 (IoU >= 0.5)."""
    from geoseg.evaluate import score_prediction

    scores = score_prediction(raster, truth, pred)
    click.echo(json.dumps({c: {k: v if isinstance(v, int) else round(float(v), 4) for k, v in s.items()}
                           for c, s in scores.items()}))
