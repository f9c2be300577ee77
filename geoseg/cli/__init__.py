"""The ``geoseg`` command: thin click commands over the library API."""

from __future__ import annotations

import click

from geoseg import __version__
from geoseg.allocator import tune_malloc
from geoseg.cli.batch_cmd import batch
from geoseg.cli.bench_cmd import bench
from geoseg.cli.eval_cmd import eval_cmd
from geoseg.cli.infer_cmd import infer
from geoseg.cli.models_cmd import models
from geoseg.cli.options import one_line_warnings, quiet_opt, verbose_opt
from geoseg.cli.qgis_cmd import qgis
from geoseg.cli.signals import run, sigterm_as_interrupt
from geoseg.cli.train_cmd import train
from geoseg.startup import configure


@click.group()
@click.version_option(__version__, prog_name="geoseg")
@verbose_opt
@quiet_opt
def main(verbose: int, quiet: bool) -> None:
    """Large GeoTIFFs in, GIS-ready building and road vectors out."""
    configure()  # the process-wide settings (geoseg.startup), before GDAL or torch first read them
    tune_malloc()  # before any worker thread allocates (see geoseg.allocator)
    one_line_warnings()
    sigterm_as_interrupt()


main.add_command(infer)
main.add_command(bench)
main.add_command(train)
main.add_command(eval_cmd)
main.add_command(models)
main.add_command(batch)
main.add_command(qgis)
try:  # written alongside; registered when present
    from geoseg.cli.synth_cmd import synth

    main.add_command(synth)
except ImportError:  # pragma: no cover
    pass


def entry() -> None:
    """The installed ``geoseg`` command and ``python -m geoseg`` (tests call :func:`main` in-process)."""
    run(main)
