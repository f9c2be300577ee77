"""What a training run leaves to read: a JSONL metrics log, a PNG of the curves, a progress bar on a TTY."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from geoseg.tempfiles import atomic_path

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"


class RunLog:
    """Appends one JSON record per line; on resume, records past the checkpoint's step are dropped."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / METRICS_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        with atomic_path(self.path) as tmp:  # a run killed here still has its old log to resume from
            tmp.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as fh:  # appended, not renamed: the records before stay whole
            fh.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict], out: Path) -> Path:
    """Training loss and validation metrics against the step, written atomically as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_val = fig.subplots(1, 2)
    train = [r for r in records if r.get("kind") == "train"]
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], marker=".", label="loss")
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log" if train else "linear", title="training")
    val = [r for r in records if r.get("kind") == "val"]
    keys = sorted({k for r in val for k in r if k.endswith(("_iou", "_object_f1"))})
    for key in keys:
        ax_val.plot([r["step"] for r in val if key in r], [r[key] for r in val if key in r], marker="o", label=key)
    ax_val.set(xlabel="step", ylabel="score", ylim=(0, 1), title="validation (tiled infer)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    with atomic_path(out) as tmp:  # the temporary name keeps the suffix matplotlib picks the format by
        fig.savefig(tmp)
    return out


@contextmanager
def step_progress(total: int, start: int, enabled: bool) -> Iterator[Callable[[int, str], None]]:
    """A rich progress bar over optimiser steps (TTY only); yields ``update(step, text)``."""
    if not enabled or not sys.stderr.isatty():
        yield lambda step, text: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[text]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("train", total=total, completed=start, text="")
        yield lambda step, text: bar.update(task, completed=step, text=text)
