"""``geoseg batch``: a thin wrapper over :func:`geoseg.batch.run_batch`."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from geoseg.bands import parse_bands
from geoseg.cli.options import quiet_opt, run_options, user_errors, values_from, verbose_opt
from geoseg.cli.progress import emit_progress, progress_opt
from geoseg.pipeline import InferConfig, load_pipeline
from geoseg.preflight import check_batch_paths, check_model
from geoseg.remote import redact

if TYPE_CHECKING:
    from geoseg.batch import BatchSummary
    from geoseg.batch.inputs import StacSearch


def _cluster_opts(values: tuple[str, ...]) -> dict[str, object]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars/lists (``cores=4``, ``queue=gpu``)."""
    import yaml

    out: dict[str, object] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--cluster-opt")
        out[key.strip()] = yaml.safe_load(value)
    return out


@click.command()
@click.argument("source", metavar="INPUT", required=False)
@click.option("--out-dir", required=True, type=click.Path(),
              help="Folder for the outputs, the manifest (geoseg-batch.sqlite) and the summary JSON.")
@run_options
@click.option("--outputs", default="vectors,classes", show_default=True,
              help="Per scene: vectors (<name>.gpkg), classes (<name>_classes.tif), probs (<name>_probs.tif).")
@click.option("--stac-api", help="STAC API to search instead of INPUT (its landing page URL); needs --collection.")
@click.option("--collection", "collections", multiple=True, help="--stac-api: collection to search; repeatable.")
@click.option("--bbox", help="--stac-api: WEST,SOUTH,EAST,NORTH in degrees (WGS84).")
@click.option("--datetime", "when", help="--stac-api: an instant or range, e.g. 2024-01-01/2024-06-30.")
@click.option("--query", "queries", multiple=True, help="--stac-api: property filter, e.g. 'eo:cloud_cover<10' "
              "(STAC query extension); repeatable, or one JSON object.")
@click.option("--asset", "assets", default="visual,image", show_default=True,
              help="STAC asset keys to use, first present wins.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Scenes at once (default: workers + 1, at most 4).")
@click.option("--scheduler", help="threads (default), processes, tcp://HOST:PORT or tls://HOST:PORT.")
@click.option("--cluster", type=click.Choice(["local", "slurm", "kubernetes"]),
              help="Start a cluster: local processes, SLURM (dask-jobqueue) or Kubernetes (dask-kubernetes).")
@click.option("--cluster-opt", "cluster_opt", multiple=True, metavar="KEY=VALUE",
              help="Passed to the cluster class, e.g. queue=gpu, cores=8, memory=32GB, image=...; repeatable.")
@click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False), help="CA certificate (PEM) for tls://.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Client private key (PEM).")
@click.option("--retry-failed", is_flag=True, help="Run failed and quarantined scenes again.")
@click.option("--fail-exit/--no-fail-exit", default=True, show_default=True,
              help="Exit 1 when a scene failed or was quarantined in this run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@progress_opt
@verbose_opt
@quiet_opt
@user_errors
def batch(source: str | None, out_dir: str, stac_api: str | None, collections: tuple[str, ...], bbox: str | None,
          when: str | None, queries: tuple[str, ...], pipeline: str | None, model: str | None, classes: str | None,
          outputs: str,
          assets: str, bands: str | None, tile: int | None, halo: int | None, batch_size: int | None,
          block_size: int | None,
          device: str | None, runtime: str | None, precision: str | None, workers: int | None,
          concurrency: int | None, scheduler: str | None,
          resample: bool | None, cluster: str | None, cluster_opt: tuple[str, ...], tls_ca_file: str | None,
          tls_cert: str | None, tls_key: str | None, retry_failed: bool, fail_exit: bool, as_json: bool,
          progress_mode: str, verbose: int, quiet: bool) -> None:
    """Segment every scene of INPUT into --out-dir, skipping scenes already done.

    INPUT is a folder (searched recursively for .tif/.tiff), a glob (quoted), a text manifest (one path or URL
    per line), a STAC ItemCollection/Catalog JSON (a file or an https:// URL), or one scene (a file, https://,
    s3://, gs://, az://); or no INPUT and --stac-api. Remote scenes are read in place.
    """
    inputs = stac_source(source, stac_api, collections, bbox, when, queries)
    base = load_pipeline(pipeline) if pipeline else InferConfig()
    config = base.replace(model=model, tile=tile, halo=halo, batch_size=batch_size, block_size=block_size,
                          device=device, runtime=runtime, precision=precision, resample=resample,
                          bands=parse_bands(bands) if bands else None,
                          classes=tuple(c.strip() for c in classes.split(",")) if classes else None)
    # user errors answer before Dask and torch are imported: the model, tiling, classes, the inputs and folder
    check_model(config, values_from(pipeline, base, {"tile": tile, "halo": halo, "bands": bands, "classes": classes}))
    asset_keys = tuple(a.strip() for a in assets.split(",") if a.strip())
    check_batch_paths(inputs, out_dir, {"--pipeline": pipeline, "--model": config.model}, asset_keys)
    from geoseg.batch import BatchOptions, ClusterSpec, run_batch
    from geoseg.predict import cpu_count

    spec = ClusterSpec(scheduler=scheduler or config.scheduler, cluster=cluster,
                       workers=workers or config.workers or cpu_count(), options=_cluster_opts(cluster_opt),
                       tls_ca_file=tls_ca_file, tls_cert=tls_cert, tls_key=tls_key)
    options = BatchOptions(outputs=tuple(o.strip() for o in outputs.split(",") if o.strip()),
                           retry_failed=retry_failed, concurrency=concurrency,
                           asset_keys=asset_keys, verbose=verbose > 0,
                           progress=(lambda done, total: emit_progress("batch", done, total))
                           if progress_mode == "json" else None)
    log = (lambda line: None) if quiet else (lambda line: click.echo(f"geoseg batch: {redact(line)}", err=True))
    summary = run_batch(inputs, out_dir, config, options, spec, argv=sys.argv, log=log)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    elif not quiet:
        print_table(summary)
    if summary.stopped_by:
        sys.exit(130 if summary.stopped_by == "SIGINT" else 143)
    if fail_exit and summary.failed:
        sys.exit(1)


def stac_source(source: str | None, stac_api: str | None, collections: tuple[str, ...], bbox: str | None,
                when: str | None, queries: tuple[str, ...]) -> "str | StacSearch":
    """INPUT, or the STAC API search the --stac-api options describe (exactly one of them)."""
    from geoseg.batch.inputs import StacSearch

    if stac_api is None:
        if source is None:
            raise click.UsageError("give INPUT (a folder, glob, manifest, STAC JSON or scene) or --stac-api URL")
        if collections or bbox or when or queries:
            raise click.UsageError("--collection, --bbox, --datetime and --query go with --stac-api")
        return source
    if source is not None:
        raise click.UsageError(f"give INPUT ({source}) or --stac-api, not both")
    if not collections:
        raise click.UsageError("--stac-api needs --collection (e.g. --collection sentinel-2-l2a)")
    box = None
    if bbox:
        try:
            west, south, east, north = (float(v) for v in bbox.split(","))
        except ValueError:
            raise click.BadParameter(f"{bbox!r}: expected WEST,SOUTH,EAST,NORTH", param_hint="--bbox") from None
        box = (west, south, east, north)
    return StacSearch(stac_api, collections, box, when, queries)


def print_table(summary: "BatchSummary") -> None:
    """One row per scene and a line of counts, with rich."""
    from rich.console import Console
    from rich.table import Table

    colours = {"done": "green", "skipped": "cyan", "failed": "red", "quarantined": "magenta", "pending": "yellow"}
    table = Table(title=f"geoseg batch {summary.run_id}", title_justify="left")
    for col in ("scene", "status", "seconds", "reason / outputs"):
        table.add_column(col, overflow="fold")
    for s in summary.scenes:
        detail = s.reason if s.status != "done" else ", ".join(s.outputs)
        table.add_row(s.name, f"[{colours.get(s.status, 'white')}]{s.status}[/]",
                      f"{s.seconds:.1f}" if s.seconds is not None else "", detail or "")
    console = Console(width=max(100, Console().width))
    console.print(table)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n)
    console.print(f"{counts} in {summary.seconds:.1f} s; manifest: "
                  f"{summary.out_dir}/geoseg-batch.sqlite")
