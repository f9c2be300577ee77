"""``geoseg bench``: benchmarks that print one JSON object."""

from __future__ import annotations

import json
from typing import cast
from pathlib import Path

import click

from geoseg.cli.options import precision_opt, user_errors, verbose_opt


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
@click.option("--runtime", default="torch", show_default=True, help="Model runtime (see 'geoseg infer --help'); "
              "several, comma-separated (torch,auto), alternate run by run in fresh processes and are compared.")
@precision_opt
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the synthetic scene here for reuse.")
@click.option("--no-vectors", is_flag=True, help="Only the class raster (isolates vectorising cost).")
@click.option("--no-model-only", is_flag=True, help="Skip the model-only bound (e.g. for memory-only runs).")
@click.option("--baseline", is_flag=True, help="Also time a plain windowed loop and its own model-only bound "
              "(the issue's yardstick), in the same process.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs, each in a fresh process: every report plus the medians.")
@click.option("--project-cores", type=click.IntRange(min=1), default=16, show_default=True,
              help="With --scheduler processes: project Mpx/s to a machine with this many cores.")
@click.option("--project-model-mpx-s", type=click.FloatRange(min=0, min_open=True),
              help="Model rate for the projection, e.g. a GPU's (default: the model-only bound measured here).")
@click.option("--marginal-from", type=click.IntRange(min=64),
              help="With --scheduler processes: first run this smaller size too, and report the driver's and the "
              "workers' non-model CPU per Mpx the larger scene adds (fixed costs cancel: 'marginal').")
@click.option("--classes-out", type=click.Path(dir_okay=False), hidden=True, help="Keep the class raster here.")
@click.option("--remote", is_flag=True, help="Also read the scene (as a COG) over loopback HTTP: identical outputs, "
              "bytes fetched vs file size, Mpx/s remote vs local (geoseg.remote_bench).")
@verbose_opt
@user_errors
def bench_infer_cmd(size: int, model: str | None, block_size: int | None, batch_size: int | None, workers: int | None,
                    scheduler: str, device: str, runtime: str, precision: str | None, workdir: str | None,
                    no_vectors: bool, no_model_only: bool, baseline: bool, repeat: int, project_cores: int,
                    project_model_mpx_s: float | None, marginal_from: int | None, classes_out: str | None,
                    remote: bool, verbose: int) -> None:
    """End-to-end inference vs the model-only bound on the same tiles, peak RSS, time per stage; with
    --scheduler processes also driver and worker CPU per Mpx and the Mpx/s projected to --project-cores."""
    from geoseg.bench import bench_infer, bench_repeat
    from geoseg.pipeline import InferConfig, Precision, Runtime

    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    if repeat > 1 or len(runtimes) > 1:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # one synthetic scene for every run
            args = ["--size", str(size), "--scheduler", scheduler, "--device", device, "--workdir", workdir or tmp,
                    "--project-cores", str(project_cores)]
            args += ["--precision", precision] if precision else []
            for flag, value in (("--model", model), ("--block-size", block_size), ("--batch-size", batch_size),
                                ("--workers", workers), ("--project-model-mpx-s", project_model_mpx_s)):
                args += [flag, str(value)] if value is not None else []
            for flag, on in (("--no-vectors", no_vectors), ("--no-model-only", no_model_only),
                             ("--baseline", baseline)):
                args += [flag] if on else []
            if len(runtimes) > 1:
                from geoseg.runtime_bench import compare_runtimes

                click.echo(json.dumps(compare_runtimes(args, runtimes, repeat)))
            else:
                click.echo(json.dumps(bench_repeat(args + ["--runtime", runtime], repeat)))
        return

    config = InferConfig(model=model, block_size=block_size, batch_size=batch_size, workers=workers,
                         scheduler=scheduler, device=device, runtime=cast(Runtime, runtime),
                         precision=cast(Precision, precision or "fp32"))
    if remote:
        from geoseg.remote_bench import bench_infer_remote

        click.echo(json.dumps(bench_infer_remote(size, config, Path(workdir) if workdir else None, not no_vectors)))
        return
    small = None
    if marginal_from:
        from geoseg.bench import marginal_split

        small = bench_infer(marginal_from, config, Path(workdir) if workdir else None, vectors=not no_vectors,
                            model_only=False, project_cores=project_cores, project_model_mpx_s=project_model_mpx_s)
    result = bench_infer(size, config, Path(workdir) if workdir else None, vectors=not no_vectors,
                         model_only=not no_model_only, baseline=baseline, project_cores=project_cores,
                         project_model_mpx_s=project_model_mpx_s,
                         classes_out=Path(classes_out) if classes_out else None)
    if small is not None:
        result = {**result, "marginal": marginal_split(small, result), "marginal_from_run": small}
    click.echo(json.dumps(result))


@bench.command("memory")
@click.option("--size", "sizes", type=click.IntRange(min=256), multiple=True, required=True,
              help="Scene side in pixels; repeat for several (each runs in its own process, so its peak RSS is its own).")
@click.option("--model", default="linear", show_default=True, help="'linear': a 1x1-convolution bundle that reads "
              "the bench scene's classes back (realistic objects, cheap); 'tiny': the untrained U-Net of bench batch; "
              "or a bundle path or registered name.")
@click.option("--workers", type=click.IntRange(min=1))
@click.option("--scheduler", default="threads", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--block-size", type=int, help="Default: auto (as infer).")
@click.option("--batch-size", type=int, help="Default: 1 on CPU, 16 on CUDA.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the bench scenes and model here for reuse "
              "(outputs go to a temporary folder inside it).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.05, show_default=True,
              help="Seconds between RSS samples of the process tree.")
@click.option("--pattern", type=click.IntRange(min=256), default=4096, show_default=True,
              help="Side of the synthetic pattern the scene repeats (mirrored).")
@click.option("--child", is_flag=True, hidden=True)
@verbose_opt
@user_errors
def bench_memory_cmd(sizes: tuple[int, ...], model: str, workers: int | None, scheduler: str, device: str,
                     block_size: int | None, batch_size: int | None, workdir: str | None, interval: float,
                     pattern: int, child: bool, verbose: int) -> None:
    """Peak RSS of infer (vectors + class COG; driver and workers) per scene size and the phase it occurs in, on
    a scene repeated from one synthetic pattern, cheap enough for 32768²."""
    import tempfile

    if child:
        from geoseg.memory_bench import bench_memory
        from geoseg.pipeline import InferConfig

        config = InferConfig(block_size=block_size, batch_size=batch_size, workers=workers, scheduler=scheduler,
                             device=device)
        assert workdir is not None  # the parent always passes one
        click.echo(json.dumps(bench_memory(sizes[0], config, Path(workdir), model, interval, pattern)))
        return
    from geoseg.memory_bench import bench_memory_sizes

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--model", model, "--scheduler", scheduler, "--device", device, "--workdir", workdir or tmp,
                "--interval", str(interval), "--pattern", str(pattern)]
        for flag, value in (("--workers", workers), ("--block-size", block_size), ("--batch-size", batch_size)):
            args += [flag, str(value)] if value is not None else []
        click.echo(json.dumps(bench_memory_sizes(list(sizes), args)))


@bench.command("model")
@click.option("--model", "names", multiple=True, help="Model to time (repeatable): a name of "
              "geoseg.models.bench.DEFAULT_MODELS or an architecture; with --runtime also a bundle ('default'). "
              "Default: all of DEFAULT_MODELS; with --runtime, default, unet-seresnext-aspp and resunet-a/d6.")
@click.option("--tile", type=int, help="Tile side [default: 512; with --runtime, a bundle's own].")
@click.option("--bands", type=int, default=3, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True, help="Timed forwards per setting (median).")
@click.option("--threads", type=int, help="Threads for the all-threads CPU figure (default: all cores).")
@click.option("--runtime", "runtimes", help="Compare runtimes, comma-separated: torch, onnxruntime, openvino, "
              "openvino-bf16, torch-bf16, torch-compile (tiles/s per runtime and thread count, CPU).")
@verbose_opt
@user_errors
def bench_model_cmd(names: tuple[str, ...], tile: int | None, bands: int, repeat: int, threads: int | None,
                    runtimes: str | None, verbose: int) -> None:
    """Tiles/s (CPU, 1 and all threads; CUDA bf16 when present), parameters and GFLOP per tile, per model."""
    if runtimes:
        from geoseg.predict import cpu_count
        from geoseg.runtime_bench import bench_model_runtimes

        chosen = list(names) or ["default", "unet-seresnext-aspp", "resunet-a/d6"]
        click.echo(json.dumps(bench_model_runtimes(chosen, [r.strip() for r in runtimes.split(",") if r.strip()],
                                                   tile, bands, 3, repeat, threads or cpu_count())))
        return
    from geoseg.models.bench import bench_model

    click.echo(json.dumps(bench_model(list(names) or None, tile=tile or 512, bands=bands, repeat=repeat,
                                      all_threads=threads)))


@bench.command("train")
@click.option("--pipeline", "recipe", default="pipelines/default.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Training recipe whose model, window and batch are measured.")
@click.option("--steps", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, help="Default: the recipe's.")
@click.option("--window", type=int, help="Default: the recipe's.")
@click.option("--threads", type=int, help="Torch threads on CPU (default: the recipe's, 0 = every core).")
@click.option("--size", type=int, default=512, show_default=True, help="Side of the synthetic scene sampled from.")
@click.option("--device", default="auto", show_default=True)
@verbose_opt
@user_errors
def bench_train_cmd(recipe: str, steps: int, batch_size: int | None, window: int | None, threads: int | None,
                    size: int, device: str, verbose: int) -> None:
    """Training samples/s: the whole loop, the window sampler alone and the model step alone (bf16 on CUDA)."""
    from geoseg.train.bench import bench_train

    click.echo(json.dumps(bench_train(recipe, steps, batch_size, window, device, threads, size)))


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


@bench.command("assemble")
@click.option("--features", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Features per layer (polygons and centerlines).")
@click.option("--per-part", type=click.IntRange(min=1), default=2_000, show_default=True, help="Features a part.")
@verbose_opt
@user_errors
def bench_assemble_cmd(features: int, per_part: int, verbose: int) -> None:
    """GeoPackage assembly from vector parts: CPU s per 100k features and commits, one transaction vs GDAL's appends."""
    from geoseg.assemble_bench import bench_assemble

    click.echo(json.dumps(bench_assemble(features, per_part)))


@bench.command("batch")
@click.option("--scenes", type=click.IntRange(min=1), default=8, show_default=True, help="Synthetic scenes.")
@click.option("--size", type=int, default=1024, show_default=True, help="Side of each scene in pixels.")
@click.option("--model", help="Bundle path or registered name (default: the bundled model); 'tiny': a small "
              "untrained U-Net, so the work around the model dominates.")
@click.option("--tile", type=int, help="Tile size (default: the bundle's).")
@click.option("--halo", type=int, help="Halo (default: the bundle's).")
@click.option("--device", default="auto", show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pairs of runs, the order alternating (1 2, 2 1, ...); the median speed-up.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the synthetic scenes here for reuse.")
@click.option("--model-scaling/--no-model-scaling", default=True, show_default=True,
              help="Then time the model alone with 1 and 2 workers (forwards back to back), to read the "
              "speed-up against.")
@verbose_opt
@user_errors
def bench_batch_cmd(scenes: int, size: int, model: str | None, tile: int | None, halo: int | None, device: str,
                    repeat: int, workdir: str | None, model_scaling: bool, verbose: int) -> None:
    """Scenes per hour of `geoseg batch` with 1 and 2 local worker processes, and the speed-up."""
    from geoseg.batch.bench import bench_batch
    from geoseg.pipeline import InferConfig

    config = InferConfig(model=model, tile=tile, halo=halo, device=device)
    click.echo(json.dumps(bench_batch(scenes, size, config, folder=Path(workdir) if workdir else None,
                                      repeat=repeat, scaling=model_scaling)))


@bench.command("footprints")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.argument("seeds", type=int, nargs=-1, required=True)
@click.option("--look", default="temperate", show_default=True, help="Look of the synth scenes (geoseg synth --look).")
@click.option("--size", type=click.IntRange(min=64), default=1024, show_default=True, help="Side of each scene.")
@click.option("--model", is_flag=True, help="Also the bundled model's predictions (class and probability rasters).")
@click.option("--tta", type=click.Choice(["1", "4", "8"]), default="1", show_default=True,
              help="Views for the model's predictions (as infer --tta).")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Also buildingregulariser on the raw outlines, where installed (pip install buildingregulariser; "
                   "not a dependency): the report says when it is skipped.")
@click.option("--regularize-m", type=click.FloatRange(min=0, min_open=True),
              help="Default: the building class's.")
@click.option("--misfit", type=float, help="Trade-off studies: geoseg.vectorize.regularize.MAX_MISFIT_PX.")
@click.option("--lost", type=float, help="Trade-off studies: MAX_LOST_PX.")
@click.option("--hausdorff", type=float, help="Trade-off studies: HAUSDORFF_TOLERANCES.")
@click.option("--only", default="", help="Comma-separated prefixes of the predictions to score (single, raster, "
              "model_reg...); default: all.")
@verbose_opt
@user_errors
def bench_footprints_cmd(folder: Path, seeds: tuple[int, ...], look: str, size: int, model: bool, tta: str,
                         reference: bool, regularize_m: float | None, misfit: float | None, lost: float | None,
                         hausdorff: float | None, only: str, verbose: int) -> None:
    """Building outlines against exact truth on synth scenes made in FOLDER (one per seed, reused): object F1,
    matched mean IoU and right-angled share, plain vs --regularize (vs buildingregulariser)."""
    from typing import Literal

    from geoseg.footprint_bench import FootprintRun, bench_footprints

    limits = {k: v for k, v in (("MAX_MISFIT_PX", misfit), ("MAX_LOST_PX", lost), ("HAUSDORFF_TOLERANCES", hausdorff))
              if v is not None}
    run = FootprintRun(folder, seeds, look, size, model, reference, cast(Literal[1, 4, 8], int(tta)), regularize_m,
                       limits, tuple(o for o in only.split(",") if o))
    click.echo(json.dumps(bench_footprints(run)))


@bench.command("tta")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--views", "views", type=click.Choice(["1", "4", "8"]), multiple=True,
              help="Numbers of views to run (repeatable) [default: 1 4 8]; the first is the cost ratio's base.")
@click.option("--look", "looks", multiple=True, help="Looks (repeatable) [default: arid nordic tropical].")
@click.option("--seed", "seeds", type=int, multiple=True, help="Seeds (repeatable) [default: 4101 4102].")
@click.option("--size", type=click.IntRange(min=64), default=1024, show_default=True, help="Side of each scene.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--model", help="Bundle path or registered name (default: the bundled model).")
@verbose_opt
@user_errors
def bench_tta_cmd(folder: Path, views: tuple[str, ...], looks: tuple[str, ...], seeds: tuple[int, ...], size: int,
                  workers: int, model: str | None, verbose: int) -> None:
    """Cost (predict CPU s/Mpx, ratio) and gain (pooled scores) of --tta on held-out looks; scenes and runs are
    kept in FOLDER (FOLDER/tV is what 'geoseg eval --many' reads) and reused."""
    from geoseg.tta_bench import LOOKS, SEEDS, VIEWS, bench_tta

    click.echo(json.dumps(bench_tta(folder, tuple(int(v) for v in views) or VIEWS, looks or LOOKS, seeds or SEEDS,
                                    size, workers, model)))
