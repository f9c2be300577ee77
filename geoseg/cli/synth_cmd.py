"""``geoseg synth``: a thin wrapper over :func:`geoseg.synth.write_scene`."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.errors import GeosegError


@click.command("synth")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", type=click.IntRange(min=1), help="Square scene of N x N pixels (default 1024).")
@click.option("--width", type=click.IntRange(min=1), help="Scene width in pixels (with --height).")
@click.option("--height", type=click.IntRange(min=1), help="Scene height in pixels (with --width).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same scene, byte for byte.")
@click.option("--crs", default="EPSG:32631", show_default=True, help="Any CRS string GDAL/PROJ accepts.")
@click.option("--gsd", type=float, help="Pixel size in CRS units [default: 0.5, or 5e-6 for a geographic CRS].")
@click.option("--origin", type=(float, float), help="X Y of the top-left corner in CRS units.")
@click.option("--rotation", type=float, default=0.0, show_default=True, help="Grid rotation, degrees.")
@click.option("--dtype", type=click.Choice(["uint8", "uint16", "float32"]), default="uint8", show_default=True)
@click.option("--bands", type=click.IntRange(1, 16), default=3, show_default=True,
              help="3 = RGB; 4 adds NIR; more add further plausible bands.")
@click.option("--nodata-border", type=click.IntRange(min=0), default=0, show_default=True,
              help="Width in pixels of a ragged nodata band along the left edge (sets nodata=0).")
@click.option("--density", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Scales the number of roads and buildings.")
@click.option("--look", default="classic", show_default=True,
              help="Appearance: classic, a training look (temperate, mediterranean, greyscale-suburb, autumn, "
                   "dry-grass), a held-out look (arid, nordic, tropical) or random (drawn per seed).")
@click.option("--truth", "truth_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Ground-truth GeoPackage [default: OUT with a _truth.gpkg suffix].")
@click.option("--labels", "labels_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the class raster (0 background, 1 building, 2 road) the truth rasterises to.")
@click.option("--block", type=click.IntRange(min=256), default=1024, show_default=True,
              help="Pixels rendered per write; bounds memory.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def synth(out: Path, size: int | None, width: int | None, height: int | None, seed: int, crs: str,
          gsd: float | None, origin: tuple[float, float] | None, rotation: float, dtype: str, bands: int,
          nodata_border: int, density: float, look: str, truth_out: Path | None, labels_out: Path | None,
          block: int, overwrite: bool) -> None:
    """Write a synthetic georeferenced aerial scene OUT (GeoTIFF) and its exact ground-truth vectors."""
    from pyproj import CRS  # heavy imports stay out of `geoseg --help`

    from geoseg.synth import SynthSpec, write_scene

    if size is not None and (width is not None or height is not None):
        raise click.UsageError("use either --size or --width/--height, not both")
    if (width is None) != (height is None):
        raise click.UsageError("--width and --height go together")
    if width is None or height is None:
        width = height = size or 1024
    try:
        if gsd is None:
            gsd = 5e-6 if CRS.from_user_input(crs).is_geographic else 0.5
    except Exception:  # an unknown CRS: let SynthSpec report it in the usual words
        gsd = 0.5
    try:
        spec = SynthSpec(width, height, seed=seed, crs=crs, gsd=gsd, origin=origin, dtype=dtype, bands=bands,
                         nodata_border=nodata_border, density=density, rotation=rotation, look=look)
        truth = write_scene(spec, out, truth_out, block=block, overwrite=overwrite, labels_out=labels_out)
    except GeosegError as err:
        raise click.ClickException(str(err)) from err
    truth_path = truth_out or out.with_name(f"{out.stem}_truth.gpkg")
    click.echo(f"wrote {out} ({width}x{height}, {len(truth['buildings'])} buildings, "
               f"{len(truth['roads'])} road pieces) and {truth_path}")
