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


@bench.command("vectorize")
@click.option("--size", "sizes", type=int, multiple=True, help="Scene side in pixels; repeat for several "
              "(default: 4096 8192 16384 32768). Each size runs in its own process, so peak RSS is its own.")
@click.option("--block", type=int, default=1024, show_default=True, help="Block side in pixels.")
@click.option("--child", is_flag=True, hidden=True)
@verbose_opt
@user_errors
def bench_vectorize_cmd(sizes: tuple[int, ...], block: int, child: bool, verbose: int) -> None:
    """Block vectoriser + reduction + GeoPackage writer on procedural masks: polygons/s and peak RSS per size."""
    import subprocess
    import sys

    from geoseg.vectorize.drive import bench_vectorize

    if child:
        click.echo(json.dumps(bench_vectorize(sizes[0], block)))
        return
    runs = []
    for size in sizes or (4096, 8192, 16384, 32768):
        proc = subprocess.run([sys.executable, "-m", "geoseg", "bench", "vectorize", "--child", "--size", str(size),
                               "--block", str(block)], check=True, capture_output=True, text=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rss = [r["peak_rss_mb"] for r in runs]
    click.echo(json.dumps({"bench": "vectorize", "block": block, "runs": runs,
                           "rss_ratio_largest_to_smallest": round(rss[-1] / rss[0], 3)}))
