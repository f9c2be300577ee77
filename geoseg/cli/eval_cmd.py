"""``geoseg eval``: score a prediction (vectors or class raster) against ground truth; JSON + a table."""

from __future__ import annotations

import json
import sys

import click

from geoseg.cli.options import quiet_opt, user_errors, verbose_opt
from geoseg.cli.progress import emit_progress, progress_opt


@click.command("eval")
@click.option("--pred", type=click.Path(dir_okay=False),
              help="Prediction: a GeoPackage (infer --out) or a class raster (infer --raster-out).")
@click.option("--truth", type=click.Path(dir_okay=False),
              help="Ground truth: vectors (one layer per class, e.g. buildings, roads) or a class raster.")
@click.option("--raster", type=click.Path(dir_okay=False),
              help="Predicted class raster, when --pred is the GeoPackage of the same run (pixel metrics on it).")
@click.option("--classes", default="building,road", show_default=True,
              help="Class names in class-id order after background; vector layers are NAME + 's'.")
@click.option("--resolution", type=float, help="Grid size (CRS units) when both sides are vectors (default 0.5).")
@click.option("--snap-m", type=float, default=4.0, show_default=True, help="APLS node snapping distance.")
@click.option("--seams", "seams", type=click.Path(dir_okay=False),
              help="Seam QA on this scene: disagreement between overlapping tiles (one inference pass).")
@click.option("--model", help="Bundle for --seams (default: the bundled model).")
@click.option("--tile", type=int, help="Tile size for --seams (default: the bundle's).")
@click.option("--halo", type=int, help="Halo for --seams (default: the bundle's).")
@click.option("--many", type=click.Path(),
              help="Score many scenes: a folder of NAME_truth.gpkg with NAME_pred.gpkg and/or NAME_classes.tif, or "
                   "a CSV manifest (columns truth, pred and/or raster, optional name). One row per scene + aggregate.")
@click.option("--out", "json_out", type=click.Path(dir_okay=False), help="Also write the JSON to this file.")
@progress_opt
@verbose_opt
@quiet_opt
@user_errors
def eval_cmd(pred: str | None, truth: str, raster: str | None, classes: str, resolution: float | None, snap_m: float,
             seams: str | None, model: str | None, tile: int | None, halo: int | None, many: str | None,
             json_out: str | None, progress_mode: str, verbose: int, quiet: bool) -> None:
    """Pixel IoU/precision/recall/F1 per class, the SpaceNet building metric (one-to-one at IoU >= 0.5), road
    APLS (simplified, see README) and, with --seams, tile-seam disagreement. JSON on stdout, a table on stderr."""
    from geoseg.errors import ConfigError
    from geoseg.evaluate import evaluate, seam_disagreement

    names = [c.strip() for c in classes.split(",") if c.strip()]
    spec = ({"name": "background"},) + tuple({"name": n, "layer": f"{n}s"} for n in names)
    if many:
        _many(many, spec, json_out, quiet)
        return
    if not truth:
        raise ConfigError("nothing to score against: give --truth (or --many FOLDER|MANIFEST.csv)")
    if not pred and not raster:
        raise ConfigError("nothing to score: give --pred (vectors or class raster) and/or --raster")
    steps = 2 if seams else 1  # eval has no per-window hook: progress moves per scoring step
    if progress_mode == "json":
        emit_progress("eval", 0, steps)
    scores = evaluate(raster or pred or "", truth, pred_vectors=pred if raster and pred else None, classes=spec,
                      resolution=resolution, snap_m=snap_m)
    if progress_mode == "json":
        emit_progress("eval", 1, steps)
    skipped = [n for n in names if n not in scores]
    if skipped and not quiet:
        click.echo(f"{truth}: no {', '.join(skipped)} labels (layer {', '.join(n + 's' for n in skipped)} missing): "
                   f"not scored", err=True)
    if seams:
        scores["seams"] = seam_disagreement(seams, model, tile, halo, device="auto")
        if progress_mode == "json":
            emit_progress("eval", 2, steps)
    text = json.dumps({c: {k: v if isinstance(v, int) else round(float(v), 4) for k, v in s.items()}
                       for c, s in scores.items()})
    click.echo(text)
    if json_out:
        from geoseg.tempfiles import atomic_path

        with atomic_path(json_out) as tmp:  # a reader (the QGIS plugin) never sees a half-written report
            tmp.write_text(text + "\n")
    if not quiet:
        _table(scores)


def _round(scores: dict) -> dict:
    return {c: {k: v if isinstance(v, int) else round(float(v), 4) for k, v in s.items()} if isinstance(s, dict)
            else s for c, s in scores.items()}


def _many(source: str, spec: tuple[dict, ...], json_out: str | None, quiet: bool) -> None:
    from geoseg.evaluate_many import evaluate_many

    result = evaluate_many(source, spec)
    text = json.dumps({"scenes": [_round(r) for r in result["scenes"]], "aggregate": _round(result["aggregate"])})
    click.echo(text)
    if json_out:
        from pathlib import Path

        Path(json_out).write_text(text + "\n")
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    names = [c["name"] for c in spec[1:]]
    table = Table(title="geoseg eval --many")
    table.add_column("scene")
    for n in names:
        table.add_column(f"{n} IoU", justify="right")
    table.add_column("building F1", justify="right")
    table.add_column("terraced split", justify="right")
    rows = [(r["name"], r) for r in result["scenes"]] + [("ALL (pooled)", result["aggregate"])]
    for label, r in rows:
        b = r.get("building", {})
        split = b.get("terraced_split_rate", b["terraced_split"] / b["terraced"] if b.get("terraced") else None)
        table.add_row(label, *(f"{r[n]['pixel_iou']:.3f}" if n in r else "–" for n in names),
                      f"{b['object_f1']:.3f}" if "object_f1" in b else "–",
                      f"{split:.3f}" if split is not None else "–")
    Console(stderr=True, force_terminal=False, width=120).print(table)
    sys.stderr.flush()


def _table(scores: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = [("pixel_iou", "IoU"), ("pixel_precision", "precision"), ("pixel_recall", "recall"), ("pixel_f1", "F1"),
            ("object_f1", "object F1"), ("object_precision", "obj P"), ("object_recall", "obj R"), ("apls", "APLS")]
    table = Table(title="geoseg eval")
    table.add_column("class")
    for _, label in cols:
        table.add_column(label, justify="right")
    for name, s in scores.items():
        if name == "seams":
            continue
        table.add_row(name, *(f"{s[k]:.3f}" if k in s else "–" for k, _ in cols))
    console = Console(stderr=True, force_terminal=False, width=120)
    console.print(table)
    if "seams" in scores:
        s = scores["seams"]
        console.print(f"seams: {100 * s['seam_disagreement']:.2f} % of {s['seam_pixels_compared']} overlap pixels "
                      f"change class between neighbouring tiles (max |dp| {s['seam_max_prob_diff']:.3f}; "
                      f"tile {s['tile']}, halo {s['halo']})")
    sys.stderr.flush()
