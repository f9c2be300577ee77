"""A progress bar with rate and ETA on a terminal, progress lines in logs; nothing when quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


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
