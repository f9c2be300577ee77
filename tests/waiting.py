"""Tests wait on events (a file appears, a manifest row changes, a port accepts), never on a clock.

A wait has no deadline of its own: it ends when the state is reached, when the process being watched exits
first, or when ``stop`` is set. The only time limit is pytest-timeout's per-test net (``timeout`` in
pyproject.toml), generous on purpose so that a busy machine is slower, never red.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
POLL_S = 0.05  # how often the state is looked at; results never depend on it


def wait_until(state: Callable[[], T], what: str, *, proc: subprocess.Popen | None = None,
               stop: threading.Event | None = None) -> T:
    """Poll ``state()`` until it is truthy and return it; fail at once if ``proc`` exits or ``stop`` is set."""
    tick = threading.Event() if stop is None else stop
    while True:
        value = state()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited first (code {proc.returncode})")
        if stop is not None and stop.is_set():
            raise AssertionError(f"{what}: stopped first")
        tick.wait(POLL_S)


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port`` now."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0
