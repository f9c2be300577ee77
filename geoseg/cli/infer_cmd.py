"""``geoseg infer``: a thin wrapper over :func:`geoseg.infer.infer`."""

from __future__ import annotations

import click

from geoseg.cli.options import overwrite_opt, precision_opt, quiet_opt, runtime_opt, user_errors, verbose_opt
from geoseg.cli.progress import progress_for, progress_opt
from geoseg.pipeline import InferConfig, load_pipeline, override_post


@click.command()
@click.argument("scene", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Vectors: .gpkg (all layers, styled for QGIS), or .fgb/.parquet/.geojson (one file per layer, "
                   "OUT_<layer>.ext).")
@click.option("--model", help="Bundle path or registered name (default: the bundled model).")
@click.option("--pipeline", type=click.Path(dir_okay=False), help="Pipeline YAML (pipelines/*.yaml).")
@click.option("--classes", help="Comma-separated classes to vectorise, e.g. building,road.")
@click.option("--raster-out", type=click.Path(dir_okay=False), help="Class raster (COG).")
@click.option("--prob-out", type=click.Path(dir_okay=False), help="Class probabilities (COG, float32).")
@click.option("--tile", type=int, help="Tile size in pixels (default: the bundle's).")
@click.option("--halo", type=int, help="Context pixels read around each tile core (default: the bundle's).")
@click.option("--overlap", type=int, help="Overlap between neighbouring tiles; the same as --halo 2x smaller.")
@click.option("--batch-size", type=int, help="Tiles per forward pass.")
@click.option("--block-size", type=int, help="Block side in pixels (rounded to whole tile cores).")
@click.option("--device", help="auto, cpu or cuda[:N].")
@runtime_opt
@precision_opt
@click.option("--workers", type=int, help="Dask threads or processes (default: one per core).")
@click.option("--scheduler", help="threads (default), processes or tcp://HOST:PORT.")
@click.option("--regularize", flag_value=True, default=None, help="Square building footprints (right angles).")
@click.option("--regularize-m", type=float, help="How far regularisation may move an outline, metres.")
@click.option("--simplify-m", type=float, help="Douglas-Peucker tolerance for building outlines, metres.")
@click.option("--min-area-m2", type=float, help="Drop buildings smaller than this.")
@click.option("--no-holes", "holes", flag_value=False, default=None, help="Fill interior rings of polygons.")
@click.option("--instance-split/--no-instance-split", default=None,
              help="Separate touching buildings (boundary/distance head, else a watershed) [default: on].")
@click.option("--resample", flag_value=True, default=None,
              help="If the scene's pixel size differs from the model's GSD, read it resampled (bilinear) to the "
                   "model's GSD and write the rasters back on the scene's grid; vectors are in map coordinates.")
@overwrite_opt
@progress_opt
@verbose_opt
@quiet_opt
@user_errors
def infer(scene: str, out: str | None, model: str | None, pipeline: str | None, classes: str | None,
          raster_out: str | None, prob_out: str | None, tile: int | None, halo: int | None, overlap: int | None,
          batch_size: int | None, block_size: int | None, device: str | None, runtime: str | None,
          precision: str | None, workers: int | None,
          scheduler: str | None, regularize: bool | None, regularize_m: float | None, simplify_m: float | None,
          min_area_m2: float | None, holes: bool | None, instance_split: bool | None, resample: bool | None,
          overwrite: bool, progress_mode: str, verbose: int, quiet: bool) -> None:
    """Segment SCENE (GeoTIFF) into building and road polygons."""
    from geoseg.infer import infer as run

    config = load_pipeline(pipeline) if pipeline else InferConfig()
    if overlap is not None and halo is None:
        halo = overlap // 2
    config = config.replace(model=model, tile=tile, halo=halo, batch_size=batch_size, block_size=block_size,
                            device=device, runtime=runtime, precision=precision, workers=workers,
                            scheduler=scheduler, resample=resample,
                            classes=tuple(c.strip() for c in classes.split(",")) if classes else None)
    config = override_post(config, regularize=regularize, regularize_m=regularize_m, simplify_m=simplify_m,
                           min_area_m2=min_area_m2, holes=holes, instance_split=instance_split)
    with progress_for("infer", progress_mode, quiet) as progress:
        summary = run(scene, out, config, raster_out=raster_out, prob_out=prob_out, overwrite=overwrite,
                      verbose=verbose > 0, progress=progress)
    if not quiet:
        objects = ", ".join(f"{n} {layer}" for layer, n in summary.objects.items())
        if summary.resampled:
            objects += "; resampled from {:.3g} m to {:.3g} m".format(*summary.resampled)
        click.echo(f"{objects}; {summary.valid_km2:.3f} km² covered; {summary.seconds:.1f} s, "
                   f"{summary.mpx_per_s:.2f} Mpx/s -> {', '.join(summary.outputs)}", err=True)
