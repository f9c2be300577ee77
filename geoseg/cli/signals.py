"""SIGTERM stops a command the way Ctrl-C does: temporary outputs removed, exit 130.

Process managers (QGIS's QProcess.terminate, systemd, Kubernetes) send SIGTERM, whose default action kills the
process without running any cleanup. Re-raising it as SIGINT reuses the one tested interrupt path (including
:func:`geoseg.engine.catch_interrupts`, which notices an interrupt Python swallowed). ``geoseg batch`` installs its
own handlers for both signals while it runs.
"""

from __future__ import annotations

import signal
import threading


def _as_sigint(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)


def sigterm_as_interrupt() -> None:
    """Install the handler (main thread only; signal handlers cannot be set elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_sigint)
