"""``geoseg infer``: a thin wrapper over :func:`geoseg.infer.infer`."""

from __future__ import annotations

import click

from geoseg.bands import parse_bands
from geoseg.cli.options import info_lines, overwrite_opt, quiet_opt, run_options, user_errors, values_from, verbose_opt
from geoseg.cli.progress import progress_for, progress_opt
from geoseg.pipeline import InferConfig, load_pipeline, override_post
from geoseg.preflight import check_run
from geoseg.summary import summary_line


@click.command()
@click.argument("scene", type=click.Path())
@click.option("--out", "out", type=click.Path(),
              help="Vectors: .gpkg (all layers, styled for QGIS), or .fgb/.parquet/.geojson (one file per layer, "
                   "OUT_<layer>.ext).")
@click.option("--raster-out", type=click.Path(), help="Class raster (COG).")
@click.option("--prob-out", type=click.Path(), help="Class probabilities (COG, float32).")
@run_options
@click.option("--overlap", type=int, help="Overlap between neighbouring tiles; the same as --halo 2x smaller.")
@click.option("--tta", type=click.Choice(["1", "4", "8"]),
              help="Test-time augmentation: average each tile over 4 (flips) or 8 (flips and quarter turns) views; "
                   "4x or 8x the model time [default: 1, off].")
@click.option("--scheduler", help="threads (default), processes or tcp://HOST:PORT.")
@click.option("--regularize", flag_value=True, default=None, help="Square building footprints (right angles).")
@click.option("--regularize-m", type=float, help="How far regularisation may move an outline, metres.")
@click.option("--simplify-m", type=float, help="Douglas-Peucker tolerance for building outlines, metres.")
@click.option("--min-area-m2", type=float, help="Drop buildings smaller than this.")
@click.option("--no-holes", "holes", flag_value=False, default=None, help="Fill interior rings of polygons.")
@click.option("--instance-split/--no-instance-split", default=None,
              help="Separate touching buildings (boundary/distance head, else a watershed) [default: on].")
@overwrite_opt
@progress_opt
@verbose_opt
@quiet_opt
@user_errors
def infer(scene: str, out: str | None, raster_out: str | None, prob_out: str | None, model: str | None,
          pipeline: str | None, classes: str | None, bands: str | None, tile: int | None, halo: int | None,
          batch_size: int | None, block_size: int | None, device: str | None, runtime: str | None,
          precision: str | None, workers: int | None, resample: bool | None, overlap: int | None, tta: str | None,
          scheduler: str | None, regularize: bool | None, regularize_m: float | None, simplify_m: float | None,
          min_area_m2: float | None, holes: bool | None, instance_split: bool | None,
          overwrite: bool, progress_mode: str, verbose: int, quiet: bool) -> None:
    """Segment SCENE (GeoTIFF) into building and road polygons."""
    base = load_pipeline(pipeline) if pipeline else InferConfig()
    if overlap is not None and halo is None:
        halo = overlap // 2
    config = base.replace(model=model, tile=tile, halo=halo, batch_size=batch_size, block_size=block_size,
                          device=device, runtime=runtime, precision=precision, workers=workers,
                          tta=int(tta) if tta else None,
                          scheduler=scheduler, resample=resample,
                          bands=parse_bands(bands) if bands else None,
                          classes=tuple(c.strip() for c in classes.split(",")) if classes else None)
    config = override_post(config, regularize=regularize, regularize_m=regularize_m, simplify_m=simplify_m,
                           min_area_m2=min_area_m2, holes=holes, instance_split=instance_split)
    # every user error answers here, before torch, Dask and the engine are imported (geoseg.preflight)
    inputs = {"--pipeline": pipeline}
    check_run(scene, out, config, raster_out=raster_out, prob_out=prob_out, overwrite=overwrite, inputs=inputs,
              value_from=values_from(pipeline, base, {"tile": tile, "halo": halo, "bands": bands, "classes": classes}),
              warn=False)
    from geoseg.infer import infer as run

    # plan and progress lines go to logs in the default mode; --progress json and none keep stderr for their own
    with info_lines(not quiet and progress_mode == "bar"), progress_for("infer", progress_mode, quiet) as progress:
        summary = run(scene, out, config, raster_out=raster_out, prob_out=prob_out, overwrite=overwrite,
                      verbose=verbose > 0, progress=progress, inputs=inputs)
    if not quiet:
        line = summary_line(summary.valid_km2, summary.objects, summary.measures, summary.layer_types)
        if summary.resampled:
            line += "; resampled from {:.3g} m to {:.3g} m".format(*summary.resampled)
        click.echo(f"{line}; {summary.seconds:.1f} s, {summary.mpx_per_s:.2f} Mpx/s -> {', '.join(summary.outputs)}",
                   err=True)
