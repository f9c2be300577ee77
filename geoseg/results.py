"""Task results pushed to the driver as distributed events instead of fetched one by one.

Fetching a finished task's result is a gather: a request to the scheduler, which fetches it from the worker
and sends it on. For geoseg's small results (a block's metadata, a reduction's totals) that round trip is a
large part of what a task costs the driver. A task run through :func:`pushing` also logs its pickled result
as an event on :data:`TOPIC`; the scheduler forwards it to the driver on the same ordered stream that then says
the task is done, so the driver finds the result waiting. The result is still returned as usual, so a driver
that misses the event (or a caller without one) fetches it the ordinary way.
"""

from __future__ import annotations

import pickle
import threading
import uuid
import weakref
from typing import Any, Callable

TOPIC = "geoseg-results"  # one topic for every run: the scheduler keeps a bounded log of each topic's events


def pushing(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a task and push its result to the drivers listening on :data:`TOPIC`."""
    value = fn(*args)
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a worker (a direct call)
        return value
    worker.log_event(TOPIC, (worker.get_current_task(), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
    return value


class PushedResults:
    """A client's side of :data:`TOPIC`: the pushed results of the tasks it submitted and still waits for."""

    def __init__(self, client: Any) -> None:
        self.waiting: set[str] = set()
        self.got: dict[str, bytes] = {}
        self.fetched = 0  # results that had to be fetched (no event had come)
        client.subscribe_topic(TOPIC, self._on_event)

    def _on_event(self, event: tuple[float, tuple[str, bytes]]) -> None:  # on the client's event loop
        key, payload = event[1]
        if key in self.waiting:  # (other drivers' tasks, and retries already taken, are dropped)
            self.got[key] = payload

    def submit(self, client: Any, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``client.submit(fn, *args, **kw)`` whose result will be pushed; its key is named after ``fn``."""
        key = f"{fn.__name__}-{uuid.uuid4().hex}"
        self.waiting.add(key)
        return client.submit(pushing, fn, *args, key=key, pure=False, **kw)

    def result(self, future: Any) -> Any:
        """The result of a done future: the pushed one, else fetched (a failed task raises its error here)."""
        self.waiting.discard(future.key)
        payload = self.got.pop(future.key, None)
        if payload is None or future.status != "finished":
            self.fetched += future.status == "finished"
            return future.result()
        return pickle.loads(payload)

    def forget(self, future: Any) -> None:
        self.waiting.discard(future.key)
        self.got.pop(future.key, None)


_BY_CLIENT: "weakref.WeakKeyDictionary[Any, PushedResults]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def pushed_results(client: Any) -> PushedResults:
    """The one :class:`PushedResults` of ``client`` (a topic has one handler per client, and ``geoseg batch``
    runs several scenes at once on one client)."""
    with _LOCK:
        if client not in _BY_CLIENT:
            _BY_CLIENT[client] = PushedResults(client)
        return _BY_CLIENT[client]
