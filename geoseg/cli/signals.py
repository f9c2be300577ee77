"""SIGTERM stops a command the way Ctrl-C does: temporary outputs removed, exit 130.

Process managers (QGIS's QProcess.terminate, systemd, Kubernetes) send SIGTERM, whose default action kills the
process without running any cleanup. Re-raising it as SIGINT reuses the one tested interrupt path (including
:func:`geoseg.engine.catch_interrupts`, which notices an interrupt Python swallowed). ``geoseg batch`` installs its
own handlers for both signals while it runs.

After an interrupt the outputs are already cleaned up, and what is left is the interpreter's shutdown: it joins
threads that distributed or torch may still hold (a worker's executor mid-task, a cluster whose start was cut
short), which must not keep the prompt. :func:`run` bounds it.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable


def _as_sigint(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)


def sigterm_as_interrupt() -> None:
    """Install the handler (main thread only; signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_sigint)


EXIT_GRACE_S = 20.0


def run(command: Callable[[], object]) -> None:
    """Run the command line; once it exits with 130 (interrupted), end the process within ``EXIT_GRACE_S``."""
    try:
        command()
    except SystemExit as done:
        if done.code == 130:
            timer = threading.Timer(EXIT_GRACE_S, os._exit, (130,))
            timer.daemon = True
            timer.start()
        raise
