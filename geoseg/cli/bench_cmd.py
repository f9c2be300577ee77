"""``geoseg bench``: benchmarks that print one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import user_errors, verbose_opt


@click.group()
def bench() -> None:
    """Measure speed and memory; prints JSON."""


@bench.command("infer")
@click.option("--size", type=int, default=4096, show_default=True, help="Side of the synthetic scene in pixels.")
@click.option("--model", help="Bundle path or registered name (default: the bundled model).")
@click.option("--block-size", type=int, help="Default: auto (as infer).")
@click.option("--batch-size", type=int, help="Default: 1 on CPU, 16 on CUDA.")
@click.option("--workers", type=int)
@click.option("--scheduler", default="threads", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the synthetic scene here for reuse.")
@click.option("--no-vectors", is_flag=True, help="Only the class raster (isolates vectorising cost).")
@click.option("--no-model-only", is_flag=True, help="Skip the model-only bound (e.g. for memory-only runs).")
@verbose_opt
@user_errors
def bench_infer_cmd(size: int, model: str | None, block_size: int | None, batch_size: int | None, workers: int | None,
                    scheduler: str, device: str, workdir: str | None, no_vectors: bool, no_model_only: bool,
                    verbose: int) -> None:
    """End-to-end inference vs the model-only bound on the same tiles, peak RSS, time per stage."""
    from geoseg.bench import bench_infer
    from geoseg.pipeline import InferConfig

    config = InferConfig(model=model, block_size=block_size, batch_size=batch_size, workers=workers,
                         scheduler=scheduler, device=device)
    result = bench_infer(size, config, Path(workdir) if workdir else None, vectors=not no_vectors,
                         model_only=not no_model_only)
    click.echo(json.dumps(result))


@bench.command("batch")
@click.option("--scenes", type=click.IntRange(min=1), default=8, show_default=True, help="Synthetic scenes.")
@click.option("--size", type=int, default=1024, show_default=True, help="Side of each scene in pixels.")
@click.option("--model", help="Bundle path or registered name (default: the bundled model).")
@click.option("--tile", type=int, help="Tile size (default: the bundle's).")
@click.option("--halo", type=int, help="Halo (default: the bundle's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the synthetic scenes here for reuse.")
@verbose_opt
@user_errors
def bench_batch_cmd(scenes: int, size: int, model: str | None, tile: int | None, halo: int | None, device: str,
                    workdir: str | None, verbose: int) -> None:
    """Scenes per hour of `geoseg batch` with 1 and 2 local worker processes, and the speed-up."""
    from geoseg.batch.bench import bench_batch
    from geoseg.pipeline import InferConfig

    config = InferConfig(model=model, tile=tile, halo=halo, device=device)
    click.echo(json.dumps(bench_batch(scenes, size, config, folder=Path(workdir) if workdir else None)))
