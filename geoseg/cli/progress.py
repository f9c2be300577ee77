"""A progress bar with rate and ETA on a terminal, progress lines in logs, nothing when quiet; or, for programs,
a JSON progress stream."""

from __future__ import annotations

import json
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import click


@contextmanager
def block_progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``progress(done_px, total_px)`` callback driving a rich bar (or log lines without a terminal), or
    None when disabled."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():  # logs: an estimate, then a line every so often (geoseg.plan)
        from geoseg.plan import progress_lines

        yield progress_lines(f"geoseg: {label}", lambda line: print(line, file=sys.stderr, flush=True))
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, \
        TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / 1e6 / elapsed:.2f} Mpx/s" if elapsed else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


# --progress json: the stream programs read (the QGIS plugin drives its progress bar with it). One JSON object per
# line on stderr, {"event": "progress", ...}; every other stderr line is a plain log or error line.
progress_opt = click.option(
    "--progress", "progress_mode", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True,
    help='bar: a progress bar on a terminal; json: one JSON line per update on stderr ({"event": "progress", '
         '"stage", "done", "total", "percent"}) for programs such as the QGIS plugin; none: no progress.')

_EMIT_LOCK = threading.Lock()  # batch reports from several scene threads: one whole line at a time


def emit_progress(stage: str, done: float, total: float) -> None:
    """Write one progress event (a JSON line) on stderr, flushed, so a reading process sees it at once."""
    percent = 100.0 * done / total if total else 0.0
    line = json.dumps({"event": "progress", "stage": stage, "done": round(done, 3), "total": total,
                       "percent": round(min(percent, 100.0), 2)})
    with _EMIT_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


@contextmanager
def progress_for(label: str, mode: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """The progress callback for ``--progress MODE``: JSON events (even with -q: a program asked for them), the
    terminal bar, or None."""
    if mode == "json":
        emit_progress(label, 0, 0)
        yield lambda done, total: emit_progress(label, done, total)
        return
    with block_progress(label, enabled=mode == "bar" and not quiet) as bar:
        yield bar
