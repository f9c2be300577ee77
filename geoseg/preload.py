"""Load the model in a background thread while Dask starts, and never leave that thread running.

A daemon thread still inside torch when the interpreter exits (a corrupt scene fails its first read within
milliseconds, long before a model has loaded) makes the exit abort in C++ ("terminate called without an active
exception", exit 134) instead of the documented exit 1. So the thread is an ordinary one, and it is joined
before the run returns or raises.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


def _load(bundle: str, device: str) -> None:
    from geoseg.predict import get_predictor

    try:
        get_predictor(bundle, device)
    except Exception:  # noqa: BLE001 - the first block task loads it again and reports the error properly
        pass


@contextmanager
def preloading(bundle: str, device: str, enabled: bool = True) -> Iterator[None]:
    """Warm the predictor cache for the body's duration; the loading thread has ended when this exits."""
    thread = threading.Thread(target=_load, args=(bundle, device), name="geoseg-preload") if enabled else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        if thread is not None:
            thread.join()
