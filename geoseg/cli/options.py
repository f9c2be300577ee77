"""Options shared by several commands, and the one place that turns errors into one-line messages."""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

import click

from geoseg.errors import GeosegError

def _add_verbose(ctx: click.Context, _: click.Parameter, value: int) -> int:
    obj = ctx.ensure_object(dict)
    obj["verbose"] = obj.get("verbose", 0) + value
    return int(obj["verbose"])


def _add_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> bool:
    obj = ctx.ensure_object(dict)
    obj["quiet"] = bool(obj.get("quiet", False) or value)
    return bool(obj["quiet"])


# Verbosity is set once, on the ``geoseg`` group (``geoseg -v infer ...``, as rasterio's ``rio -v``), and kept in
# ``ctx.obj``; a command's own -v/-q (``geoseg infer ... -q``) adds to it, and the command receives the result.
verbose_opt = click.option("-v", "--verbose", count=True, callback=_add_verbose,
                           help="More output; -v also shows tracebacks.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, callback=_add_quiet, help="No progress bar and no summary.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
# the names of geoseg.runtime.RUNTIMES / PRECISIONS, spelled out so that --help imports no torch
RUNTIME_NAMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISION_NAMES = ("fp32", "bf16", "fp16")
runtime_opt = click.option(
    "--runtime", type=click.Choice(RUNTIME_NAMES),
    help="Model runtime: torch, onnxruntime (pip install 'geoseg[onnx]'), openvino (pip install "
         "'geoseg[openvino]'), or auto: the fastest one installed that matches torch's output here [default: torch].")
precision_opt = click.option(
    "--precision", type=click.Choice(PRECISION_NAMES),
    help="fp32 (default, exact), or bf16/fp16 for a named runtime that supports it (faster, not exact).")

# The options ``infer`` and ``batch`` share, declared once so their help cannot drift apart; in --help order.
_RUN_OPTIONS = (
    click.option("--model", help="Bundle path or registered name (default: the bundled model)."),
    click.option("--pipeline", type=click.Path(dir_okay=False), help="Pipeline YAML (pipelines/*.yaml)."),
    click.option("--classes", help="Comma-separated classes to vectorise, e.g. building,road."),
    click.option("--bands", help="Scene bands in the model's order, 1-based (as rasterio's --bidx), e.g. 1,2,3 or "
                 "3,2,1 (default: matched by each scene's band labels, else the bundle's)."),
    click.option("--tile", type=int, help="Tile size in pixels (default: the bundle's)."),
    click.option("--halo", type=int, help="Context pixels read around each tile core (default: the bundle's)."),
    click.option("--batch-size", type=int, help="Tiles per forward pass (default: 1 on CPU, 16 on CUDA)."),
    click.option("--block-size", type=int, help="Block side in pixels, rounded to whole tile cores (default: "
                 "about 1024)."),
    click.option("--device", help="auto, cpu or cuda[:N]."),
    runtime_opt,
    precision_opt,
    click.option("--workers", type=int, help="Dask workers: threads, local processes, or (batch --cluster) SLURM "
                 "jobs or Kubernetes pods (default: one per core)."),
    click.option("--resample", flag_value=True, default=None,
                 help="If a scene's pixel size differs from the model's GSD, read it resampled (bilinear) to the "
                      "model's GSD and write the rasters back on the scene's grid; vectors are in map coordinates."),
)


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command with :data:`_RUN_OPTIONS` (model, tiling, device, runtime, workers...)."""
    for option in reversed(_RUN_OPTIONS):
        fn = option(fn)
    return fn


def values_from(pipeline: str | None, config: Any, cli: dict[str, Any]) -> dict[str, str]:
    """Where each config value given by the pipeline file (and not overridden on the command line) came from,
    so an error about it names the file and key."""
    if not pipeline:
        return {}
    return {key: f"{pipeline}: infer.{key}" for key, value in cli.items()
            if value is None and getattr(config, key, None) is not None}


class Verbosity(NamedTuple):
    verbose: int
    quiet: bool


def verbosity() -> Verbosity:
    """The run's verbosity: the group's -v/-q plus the command's own, as stored in ``ctx.obj``."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_object(dict) if ctx is not None else None) or {}
    return Verbosity(int(obj.get("verbose", 0)), bool(obj.get("quiet", False)))


class _WorkerFailures(logging.Filter):
    """Drops the log record (with traceback) a Dask worker writes for a failed task: the client re-raises the
    same exception, which is then reported once, as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


_WORKER_FAILURES = _WorkerFailures()


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print GeosegErrors as one line and exit 1 (Ctrl-C: 130); tracebacks only with -v."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = verbosity().verbose
        worker_log = logging.getLogger("distributed.worker")
        if not verbose:
            worker_log.addFilter(_WORKER_FAILURES)
        try:
            return fn(*args, **kwargs)
        except GeosegError as err:
            if verbose:
                raise
            click.echo(f"geoseg: error: {err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("geoseg: interrupted; partial outputs were removed", err=True)
            sys.exit(130)
        finally:
            worker_log.removeFilter(_WORKER_FAILURES)

    return wrapper


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class _InfoOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.INFO


@contextmanager
def info_lines(enabled: bool) -> Iterator[None]:
    """geoseg's INFO records (the plan of a run, files cleaned up...) as ``geoseg: ...`` lines on stderr."""
    log = logging.getLogger("geoseg")
    if not enabled:
        yield
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("geoseg: %(message)s"))
    handler.addFilter(_InfoOnly())
    level = log.level
    log.addHandler(handler)
    if not log.level or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def one_line_warnings() -> None:
    """geoseg's logged warnings (e.g. a scene GSD far from the model's) print as one line on stderr."""
    log = logging.getLogger("geoseg")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("geoseg: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)
