"""``run_batch``: many scenes on one Dask client, resumable, one bad scene never stops the run.

Several scenes run at once (threads on the client side), each streaming its blocks to the shared cluster
through :func:`geoseg.infer.infer`; a large scene is thereby split across all workers by its blocks. A scene's
pixels, vectors and final files are all made by tasks on the workers (see :mod:`geoseg.parts`), so this process
holds only the manifest and each running scene's small trackers, and the scenes truly run side by side. The
manifest is written by this thread only, one transaction per status change.
"""

from __future__ import annotations

import fcntl
import signal
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from geoseg.batch.cluster import ClusterSpec, check_spec, connect
from geoseg.batch.fingerprint import RunKey, digest, input_fingerprint, sha256_file
from geoseg.batch.inputs import DEFAULT_ASSETS, SceneRef, StacSearch, list_scenes
from geoseg.batch.manifest import DONE, FAILED, PENDING, QUARANTINED, SKIPPED, Manifest, SceneRow
from geoseg.errors import ConfigError, GeosegError, OutputError
from geoseg.models.bundle import resolve_bundle
from geoseg.pipeline import InferConfig
from geoseg.remote import redact
from geoseg.startup import configure
from geoseg.tempfiles import atomic_path

OUTPUT_SUFFIXES = {"vectors": ".gpkg", "classes": "_classes.tif", "probs": "_probs.tif"}
SUMMARY_NAME = "geoseg-batch-summary.json"
LOCK_NAME = ".geoseg-batch.lock"
# scenes at once by default: one more than the worker threads, so a worker never waits while a scene starts
# (checks, planning) or finishes (its last reductions, the assembly, the renames); at most this many, since each
# running scene holds its trackers in this process
MAX_CONCURRENT_SCENES = 4
STALE_PATTERN = ".*.tmp-*"  # tempfiles.temp_name: what a killed run can leave behind (files and folders)


class BatchStopped(Exception):
    """Raised inside a scene's run when the batch was asked to stop (SIGINT/SIGTERM)."""


@dataclass(frozen=True)
class BatchOptions:
    outputs: tuple[str, ...] = ("vectors", "classes")
    retry_failed: bool = False
    concurrency: int | None = None     # scenes at once; default: worker threads + 1, at most MAX_CONCURRENT_SCENES
    asset_keys: tuple[str, ...] = DEFAULT_ASSETS
    verbose: bool = False
    # called with (scenes done, counting the finished part of running scenes, scenes in the run)
    progress: Callable[[float, int], None] | None = field(default=None, compare=False)


@dataclass
class SceneOutcome:
    name: str
    input: str
    status: str
    reason: str | None = None
    seconds: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class BatchSummary:
    run_id: str
    out_dir: str
    seconds: float
    scenes: list[SceneOutcome]
    stopped_by: str | None = None      # the signal's name when SIGINT/SIGTERM stopped the run
    stale_removed: int = 0

    @property
    def counts(self) -> dict[str, int]:
        counts = {s: 0 for s in (DONE, SKIPPED, FAILED, QUARANTINED, PENDING)}
        for s in self.scenes:
            counts[s.status] = counts.get(s.status, 0) + 1
        return counts

    @property
    def failed(self) -> int:
        return self.counts[FAILED] + self.counts[QUARANTINED]

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "out_dir": self.out_dir, "seconds": round(self.seconds, 3),
                "counts": self.counts, "stopped_by": self.stopped_by, "stale_temp_files_removed": self.stale_removed,
                "scenes": [{**vars(s), "input": redact(s.input)} for s in self.scenes]}


def output_paths(out_dir: Path, name: str, outputs: tuple[str, ...]) -> dict[str, Path]:
    """Deterministic output files of one scene: ``<name>.gpkg``, ``<name>_classes.tif``, ``<name>_probs.tif``."""
    unknown = sorted(set(outputs) - set(OUTPUT_SUFFIXES))
    if unknown or not outputs:
        raise ConfigError(f"--outputs {','.join(outputs)}: choose from {', '.join(OUTPUT_SUFFIXES)}")
    return {kind: out_dir / f"{name}{OUTPUT_SUFFIXES[kind]}" for kind in outputs}


def remove_stale(out_dir: Path) -> int:
    """Delete temporary files and staging folders (:mod:`geoseg.parts`) a killed run left in ``out_dir``; only
    called while holding the folder's lock."""
    from geoseg.parts import remove_staging

    stale = list(out_dir.glob(STALE_PATTERN))
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            remove_staging(p)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """One batch per output folder; the kernel drops the lock when its process dies, even by SIGKILL."""
    try:
        f = open(out_dir / LOCK_NAME, "a")
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write in the output folder ({err.strerror}); choose another "
                          "--out-dir") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{out_dir}: another geoseg batch is running on this folder; wait for it or use "
                              "another --out-dir") from None
        yield


@contextmanager
def stop_on_signals(stop: threading.Event, log: Callable[[str], None]) -> Iterator[dict[str, str]]:
    """First SIGINT/SIGTERM: finish gracefully (in-flight scenes are stopped and cleaned); second: at once."""
    got: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        got["signal"] = signal.Signals(signum).name
        stop.set()
        log(f"{got['signal']}: stopping; in-flight scenes are removed and stay pending (again to stop at once)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def outputs_intact(out_dir: Path, recorded: dict[str, str], expected: dict[str, Path]) -> bool:
    """Every expected output exists with the checksum recorded when it was written."""
    if set(recorded) != {p.name for p in expected.values()}:
        return False
    return all((out_dir / n).is_file() and sha256_file(out_dir / n) == sha for n, sha in recorded.items())


def _reason(err: BaseException, ref: SceneRef) -> tuple[str, str]:
    """(status, one-line reason) for a scene's exception."""
    from distributed import KilledWorker

    if isinstance(err, KilledWorker):
        worker = getattr(err.last_worker, "address", err.last_worker)
        return QUARANTINED, redact(f"{ref.path}: task {err.task} killed {err.allowed_failures + 1} Dask workers (the "
                                   f"last {worker}); quarantined: check the scene and the worker logs, then "
                                   "--retry-failed")
    if isinstance(err, GeosegError):
        return FAILED, str(err).splitlines()[0]
    text = str(err).splitlines()[0] if str(err).strip() else ""
    return FAILED, redact(f"{ref.path}: {type(err).__name__}{': ' + text if text else ''}")


class _Run:
    """One invocation of ``run_batch``: the plan, the scene threads and their bookkeeping."""

    def __init__(self, out_dir: Path, config: InferConfig, options: BatchOptions, manifest: Manifest,
                 key: RunKey, run_id: str, log: Callable[[str], None]) -> None:
        self.out_dir, self.config, self.options, self.manifest = out_dir, config, options, manifest
        self.key, self.run_id, self.log = key, run_id, log
        self.params_sha = digest(key.params)
        self.stop = threading.Event()
        self.outcomes: dict[str, SceneOutcome] = {}
        self.fatal: ConfigError | None = None  # an option no scene can run with: the whole run stops
        self.running_part: dict[str, float] = {}  # running scene -> fraction of its pixels done
        self.total = 0

    def report(self) -> None:
        if self.options.progress:
            running = sum(f for name, f in list(self.running_part.items()) if name not in self.outcomes)
            self.options.progress(len(self.outcomes) + running, self.total)

    def plan(self, refs: list[SceneRef]) -> list[tuple[SceneRef, str, str]]:
        """Record skips and unrunnable scenes; return (scene, fingerprint, input fingerprint) to run."""
        todo = []
        self.total = len(refs)
        for ref in refs:
            row = self.manifest.scene(ref.name)
            problem = ref.problem
            input_fp = ""
            if not problem:
                try:
                    input_fp = input_fingerprint(ref.path)
                except GeosegError as err:  # a remote scene's HEAD failed (404, 403, timeout...)
                    problem = str(err)
                except OSError as err:
                    problem = f"{ref.path}: cannot read ({err.strerror}); check the path and permissions"
            if problem:
                if row and row.status == FAILED and row.reason == problem and not self.options.retry_failed:
                    self._skip(ref, row, "failed earlier with the same reason; --retry-failed to try again")
                else:
                    self.manifest.record_unrunnable(self.run_id, ref.name, ref.path, problem)
                    self.outcomes[ref.name] = SceneOutcome(ref.name, ref.path, FAILED, problem, 0.0,
                                                           run_id=self.run_id)
                continue
            fp = self.key.scene(input_fp)
            if row and row.fingerprint == fp:
                expected = output_paths(self.out_dir, ref.name, self.options.outputs)
                if row.status == DONE and outputs_intact(self.out_dir, row.outputs, expected):
                    self._skip(ref, row, "done earlier, same input, model and parameters")
                    continue
                if row.status in (FAILED, QUARANTINED) and not self.options.retry_failed:
                    self._skip(ref, row, f"{row.status} earlier: {row.reason}; --retry-failed to try again")
                    continue
            todo.append((ref, fp, input_fp))
        return sorted(todo, key=lambda t: -int(t[2].rsplit("|", 2)[1]))  # largest first: workers finish together

    def _skip(self, ref: SceneRef, row: SceneRow, why: str) -> None:
        self.manifest.event(self.run_id, ref.name, SKIPPED, why)
        self.outcomes[ref.name] = SceneOutcome(ref.name, ref.path, SKIPPED, why, row.seconds, row.outputs, row.run_id)

    def run_scene(self, ref: SceneRef, client: Any, workers: int) -> tuple[dict[str, str], dict[str, float]]:
        """One scene through ``infer`` on the shared client; returns output checksums and stage timings."""
        from geoseg.infer import infer

        def check_stop(done: int, total: int) -> None:  # called by infer after every block
            if self.stop.is_set():
                raise BatchStopped
            if total:
                self.running_part[ref.name] = done / total
                self.report()

        check_stop(0, 0)
        paths = output_paths(self.out_dir, ref.name, self.options.outputs)
        summary = infer(ref.path, paths.get("vectors"), self.config.replace(workers=workers),
                        raster_out=paths.get("classes"), prob_out=paths.get("probs"), overwrite=True,
                        verbose=self.options.verbose, progress=check_stop, client=client)
        return {p.name: sha256_file(p) for p in paths.values()}, summary.stage_seconds

    def execute(self, todo: list[tuple[SceneRef, str, str]], client: Any) -> None:
        workers = max(1, sum(client.nthreads().values()))
        concurrency = self.options.concurrency or min(MAX_CONCURRENT_SCENES, workers + 1)
        # each scene is planned for its share of the workers: the scenes side by side already keep every worker
        # busy, so a scene's blocks need not be cut smaller (more halo to read and predict) as the cluster grows
        per_scene = max(1, -(-workers // concurrency))
        queue = deque(todo)
        running: dict[Future[Any], tuple[SceneRef, float]] = {}
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="geoseg-scene")
        try:
            while queue or running:
                while queue and len(running) < concurrency and not self.stop.is_set():
                    ref, fp, input_fp = queue.popleft()
                    self.manifest.mark_running(self.run_id, ref.name, ref.path, fp, input_fp, self.key.model_sha256,
                                               self.params_sha)
                    running[pool.submit(self.run_scene, ref, client, per_scene)] = (ref, time.perf_counter())
                if not running:
                    break
                finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    ref, t0 = running.pop(fut)
                    self._record(ref, fut, time.perf_counter() - t0)
                    self.report()
        finally:
            pool.shutdown(wait=not running, cancel_futures=True)

    def _record(self, ref: SceneRef, fut: Future[Any], seconds: float) -> None:
        err = fut.exception()
        if err is None:
            outputs, stages = fut.result()
            self.manifest.mark_finished(self.run_id, ref.name, DONE, seconds, outputs=outputs, stage_seconds=stages)
            self.outcomes[ref.name] = SceneOutcome(ref.name, ref.path, DONE, None, seconds, outputs, self.run_id)
            self.log(f"done {ref.name} ({seconds:.1f} s)")
        elif isinstance(err, ConfigError) or isinstance(err, BatchStopped) or (
                self.stop.is_set() and not isinstance(err, GeosegError)):
            if isinstance(err, ConfigError) and self.fatal is None:
                self.fatal = err
                self.stop.set()
            self.manifest.revert_to_pending(ref.name)
            why = "stopped: the run hit an option error" if self.fatal else "stopped by a signal"
            self.manifest.event(self.run_id, ref.name, PENDING, f"{why}; runs again next time")
            self.outcomes[ref.name] = SceneOutcome(ref.name, ref.path, PENDING, "stopped", seconds)
        else:
            status, reason = _reason(err, ref)
            self.manifest.mark_finished(self.run_id, ref.name, status, seconds, reason=reason)
            self.outcomes[ref.name] = SceneOutcome(ref.name, ref.path, status, reason, seconds, run_id=self.run_id)
            self.log(f"{status} {ref.name}: {reason}")


def run_batch(source: str | StacSearch, out_dir: str | Path, config: InferConfig,
              options: BatchOptions = BatchOptions(), spec: ClusterSpec = ClusterSpec(), argv: list[str] | None = None,
              log: Callable[[str], None] = lambda line: None) -> BatchSummary:
    """Run every scene of ``source`` not already done into ``out_dir``; see the module docstring."""
    start = time.perf_counter()
    configure()  # the command's process-wide settings (geoseg.startup): once per process, a no-op after
    out_dir = Path(out_dir)
    output_paths(out_dir, "x", options.outputs)  # unknown output kinds, a missing extra... fail before anything
    check_spec(spec)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create the output folder ({err.strerror}); choose another "
                          "--out-dir") from None
    refs = list_scenes(source, exclude=out_dir, asset_keys=options.asset_keys)
    bundle = resolve_bundle(config.model).resolve()
    config = config.replace(model=str(bundle))
    key = RunKey.make(bundle, config, options.outputs)
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    with folder_lock(out_dir):
        stale = remove_stale(out_dir)
        if stale:
            log(f"removed {stale} temporary file(s) left by an interrupted run")
        manifest = Manifest(out_dir)
        try:
            manifest.abandon_stale_runs()
            manifest.start_run(run_id, argv or [], key.model_sha256, key.params)
            run = _Run(out_dir, config, options, manifest, key, run_id, log)
            with stop_on_signals(run.stop, log) as got:
                todo = run.plan(refs)
                run.report()
                if todo and not run.stop.is_set():
                    with connect(spec, options.verbose) as client:
                        run.execute(todo, client)
                for ref, _, _ in todo:  # never started because of a stop
                    run.outcomes.setdefault(ref.name, SceneOutcome(ref.name, ref.path, PENDING, "not started"))
            if run.fatal is not None:
                manifest.finish_run(run_id, "config-error", {})
                raise run.fatal
            summary = BatchSummary(run_id, str(out_dir), time.perf_counter() - start,
                                   [run.outcomes[r.name] for r in refs if r.name in run.outcomes],
                                   got.get("signal"), stale)
            manifest.finish_run(run_id, "stopped" if summary.stopped_by else "finished", summary.counts)
        finally:
            manifest.close()
        write_summary(out_dir, summary)
    return summary


def write_summary(out_dir: Path, summary: BatchSummary) -> Path:
    """The last run's summary as JSON beside the manifest (written whole or not at all)."""
    import json

    path = out_dir / SUMMARY_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary.to_json(), indent=1))
    return path
