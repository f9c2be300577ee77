"""Local process workers start as forks of a server that has imported torch and the model code once."""

from __future__ import annotations

import os
import sys

import pytest

from geoseg import forkserver
from geoseg.allocator import worker_environ
from geoseg.engine import dask_client

pytestmark = pytest.mark.skipif(not forkserver.available(), reason="no forkserver start method on this platform")


def _state() -> dict[str, object]:
    return {"preloaded": [m for m in forkserver.PRELOAD if m in sys.modules], "ppid": os.getppid(),
            "environ": dict(os.environ)}


def test_workers_are_forked_with_the_model_code_imported() -> None:
    with dask_client("processes", 2) as client:
        states = list(client.run(_state).values())  # before any task: only what the worker started with
    assert len(states) == 2
    for state in states:
        assert state["preloaded"] == list(forkserver.PRELOAD)  # with spawn, torch is imported at the first block
        assert state["ppid"] != os.getpid()  # a child of the forkserver, not of this process
        environ = state["environ"]
        assert isinstance(environ, dict)
        for var, value in worker_environ().items():  # geoseg's malloc policy reached the forked workers
            assert environ.get(var) == value, var
    assert states[0]["ppid"] == states[1]["ppid"]  # one server for both
