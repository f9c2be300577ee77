"""The Dask side: which scheduler runs a run's tasks (the driver's loop over them is :class:`geoseg.infer._Run`).

Threads (default) run in this process with nothing to start; ``processes`` starts a local process cluster on
loopback; ``tcp://HOST:PORT`` joins a running ``distributed`` scheduler.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

# imported with this module (start-up, like torch), not inside each run: in the run the import would hold the GIL
# against the model loading beside it and delay the cluster's start
import dask
from distributed import Client, LocalCluster

from geoseg import forkserver
from geoseg.allocator import worker_environ
from geoseg.errors import ConfigError
from geoseg.startup import worker_plugin

# distributed's housekeeping runs on the event-loop thread and competes with the model for the cores: its defaults
# (20 ms ticks, 10 ms stack profiler, 100 ms memory monitor, host-wide disk counters, work stealing) cost a large
# share of a run's CPU, these a small one. Heartbeats stay as the scheduler asks (failure detection). Applied to
# the clusters geoseg starts itself; other workers get them from their environment (:func:`lean_environ`) or, at
# run time, from geoseg's worker plugin (:func:`lean_worker`).
LEAN_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.disk": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
}
# the client's own housekeeping in the driver process (its event loop is most of the driver's CPU per second of
# wall): the cached scheduler info it refreshes is read by nothing in geoseg (``scheduler_info`` asks anew)
LEAN_CLIENT_CONFIG = {**LEAN_CONFIG, "distributed.client.scheduler-info-interval": "10s"}
# the slowest interval (ms) of each of a worker's periodic callbacks that :func:`lean_worker` keeps
LEAN_INTERVALS_MS = {"monitor": 2000, "tick": 1000, "memory_monitor": 1000}


def lean_environ() -> dict[str, str]:
    """:data:`LEAN_CONFIG` as the ``DASK_...`` environment variables a ``dask worker`` reads at start."""
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): str(v) for k, v in LEAN_CONFIG.items()}


def lean_worker(worker: Any) -> None:
    """Apply :data:`LEAN_CONFIG` to a running ``distributed.Worker`` (started without it): stop the stack
    profiler, the disk counters and GIL monitor, and slow the system monitor, tick and memory monitor down to
    their lean intervals. Heartbeats and the scheduler's view of the worker are left as they are."""
    callbacks = worker.periodic_callbacks
    for name in ("profile", "profile-cycle"):
        pc = callbacks.pop(name, None)
        if pc is not None:
            pc.stop()
    monitor = getattr(worker, "monitor", None)
    if monitor is not None:
        monitor.monitor_disk_io = False
        if getattr(monitor, "monitor_gil_contention", False):  # (only with gilknocker installed)
            monitor.monitor_gil_contention = False
            monitor._gilknocker.stop()
    for name, ms in LEAN_INTERVALS_MS.items():
        pc = callbacks.get(name)
        if pc is not None and pc.callback_time < ms:
            pc.callback_time = ms
    if getattr(worker, "_tick_interval", 1.0) < LEAN_INTERVALS_MS["tick"] / 1000:
        worker._tick_interval = LEAN_INTERVALS_MS["tick"] / 1000


@contextmanager
def dask_client(scheduler: str, workers: int, verbose: bool = False, security: Any = None) -> Iterator[Any]:
    """A ``distributed.Client`` for the chosen scheduler, closed (with any cluster it started) on exit.

    ``security`` (a ``distributed.security.Security``) is used to reach a ``tls://`` scheduler. Local clusters
    started here bind to loopback and, on a CUDA machine, declare a ``GPU`` resource (see :func:`task_resources`).
    Every worker runs geoseg's start-up step (:func:`configure_workers`).
    """
    quiet = logging.WARNING if verbose else logging.ERROR
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(quiet)
    # distributed's shutdown under load can leave a timed-out internal future whose "never retrieved" report
    # (logged by asyncio at ERROR) would otherwise reach the terminal after a successful run
    logging.getLogger("asyncio").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    cluster = None
    if scheduler == "threads":  # one worker: nothing to steal
        with dask.config.set({**LEAN_CONFIG, "distributed.scheduler.work-stealing": False}):
            cluster = LocalCluster(n_workers=1, threads_per_worker=workers, processes=False,
                                   dashboard_address="127.0.0.1:0", silence_logs=quiet,
                                   resources={"GPU": workers} if _has_cuda() else None)
    elif scheduler == "processes":  # the workers inherit the config, and the malloc policy, from the forkserver
        environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in worker_environ().items()}
        fork = forkserver.CONFIG if forkserver.available() else {}
        with dask.config.set({**LEAN_CONFIG, **environ, **fork}):
            if fork:
                forkserver.set_preload()
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=quiet,
                                   resources={"GPU": 1} if _has_cuda() else None)
    elif not scheduler.startswith(("tcp://", "tls://")):
        raise ConfigError(f"--scheduler {scheduler}: use threads, processes or tcp://HOST:PORT")
    try:
        with dask.config.set(LEAN_CLIENT_CONFIG):  # for a tcp:// scheduler too, not only the clusters started here
            client = Client(cluster if cluster is not None else scheduler, timeout="20s", set_as_default=False,
                            security=security if cluster is None else None)
    except OSError as err:
        if cluster is not None:
            cluster.close()
        raise ConfigError(f"--scheduler {scheduler}: cannot connect ({err}); is 'dask scheduler' running?") from None
    try:
        configure_workers(client)
        yield client
    finally:
        _close(client, cluster)


# how long closing the client and a local cluster may take: whatever distributed waits on after a Ctrl-C, the
# outputs' cleanup, which comes after, must still run
CLOSE_TIMEOUT_S = 30.0


def _close(client: Any, cluster: Any) -> None:
    for closable in (client, cluster):
        if closable is None:
            continue
        try:
            closable.close(timeout=CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError) as err:
            logging.getLogger("geoseg").debug("closing %s: %r", type(closable).__name__, err)


def configure_workers(client: Any) -> None:
    """Run :func:`geoseg.startup.configure` in every worker of ``client``, present and future (a worker plugin):
    process workers, local or remote, get the settings of the ``geoseg`` command (GDAL's bounded cache...)."""
    client.register_plugin(worker_plugin())


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def task_resources(client: Any, device: str, kind: str = "block") -> dict[str, float] | None:
    """The resources a task of ``kind`` asks for on this cluster (see :mod:`geoseg.placement`): a share of a
    ``GPU`` resource when the cluster has GPU workers and the device is not ``cpu``, else None (anywhere)."""
    from geoseg.placement import gpu_workers, resources_for

    return resources_for(kind, device, gpu_workers(client) if device != "cpu" else {})


@contextmanager
def catch_interrupts() -> Iterator[threading.Event]:
    """Remember Ctrl-C even when Python swallows the KeyboardInterrupt (it does when the signal lands in a
    garbage-collector callback, e.g. distributed's GC diagnostics); callers check the event between steps."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        event.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)
