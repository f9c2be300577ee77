"""Options shared by several commands, and the one place that turns errors into one-line messages."""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from geoseg.errors import GeosegError

verbose_opt = click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def values_from(pipeline: str | None, config: Any, cli: dict[str, Any]) -> dict[str, str]:
    """Where each config value given by the pipeline file (and not overridden on the command line) came from,
    so an error about it names the file and key."""
    if not pipeline:
        return {}
    return {key: f"{pipeline}: infer.{key}" for key, value in cli.items()
            if value is None and getattr(config, key, None) is not None}


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
        verbose = kwargs.get("verbose", 0)
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
