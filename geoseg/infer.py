"""``infer``: scene → blocks (Dask) → tiles → model → stitch → parts → COG rasters + GeoPackage vectors.

This page wires the data-flow modules together; each step lives in its own module. Block tasks write their own
raster and vector parts (:mod:`geoseg.parts`); this process (the driver) only plans, tracks fragments and cells
(:mod:`geoseg.tracker`), submits the reductions and assemblies (:mod:`geoseg.assemble`) and renames the files
into place.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from rasterio.windows import Window

from geoseg.allocator import HeapTrim, trim_heap
from geoseg.assemble import (RasterAssembly, ReduceJob, Totals, VectorParts, assemble_raster, assemble_vectors,
                             run_reduce, store_block_vectors)
from geoseg.engine import catch_interrupts, dask_client, task_resources
from geoseg.bands import select_bands
from geoseg.parts import (CELLS, FRAGMENTS, VECTORS, check_workers_see, make_staging, remove_staging,
                          require_folder, staging_name, write_raster_part)
from geoseg.preflight import check_fit, check_run
from geoseg.plan import plan_line
from geoseg.preload import preloading
from geoseg.results import pushed_results
from geoseg.tempfiles import remove_stale
from geoseg.styles import class_palette, layer_styles, write_class_sidecars
from geoseg.tracker import Tracker
from geoseg.tiling import Block, TileSpec, auto_block_size, block_input_span, block_side, make_blocks
from geoseg.models.bundle import BundleMeta
from geoseg.pipeline import InferConfig
from geoseg.predict import cpu_count, default_batch_size, get_predictor, resolve_device
from geoseg.runtime import check_runtime
from geoseg.startup import configure
from geoseg.grid import metres_per_unit
from geoseg.scene import SceneInfo, read_block
from geoseg.stitch import predict_block, tile_cores_valid
from geoseg.vectorize import ClassVectors, VectorSpec, vectorize_block

CLASS_NODATA = 255
# block tasks outstanding per worker: one queued behind the running one, so a worker does not idle while the driver
# handles a result, and no more, so the driver tracks few unfinished blocks at a time
INFLIGHT_PER_WORKER = 2
TRIM_EVERY_S = 30.0  # how often the run gives freed heap pages back (see geoseg.allocator.HeapTrim)
PROB_NODATA = -1.0


@dataclass(frozen=True)
class Staging:
    """The staging folder of each output (:mod:`geoseg.parts`), None where the output is not written."""

    classes: Path | None = None
    probs: Path | None = None
    vectors: Path | None = None


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block; small and picklable."""

    scene: SceneInfo
    block: Block
    spec: TileSpec
    bundle: str
    meta: BundleMeta
    device: str
    batch_size: int
    vectors: VectorSpec | None    # None: nothing to vectorise
    staging: Staging = Staging()  # where the block writes its parts
    runtime: str = "torch"    # geoseg.runtime
    precision: str = "fp32"
    tta: int = 1              # views averaged per tile (geoseg.tta)

    def predictor(self) -> Any:
        return get_predictor(self.bundle, self.device, self.runtime, self.spec.tile, self.precision)


@dataclass
class BlockResult:
    """What a block task returns: its parts are on disk, only their small metadata comes back."""

    block: Block
    vectors: VectorParts | None
    tiles_run: int
    valid_px: int
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the worker thread's CPU per stage
    reduced: tuple[Totals, ...] = ()  # of the reductions the task carried, in their order


def run_block(job: BlockJob, carried: tuple[ReduceJob, ...] = ()) -> BlockResult:
    """Read a block with its halo, predict its tiles in batches, stitch the cores, polygonise, write the parts.

    ``carried``: reductions that earlier blocks made ready, finished first in this same task (stage
    ``reduce``), so that a run costs the driver one Dask task per block rather than one more per reduction.
    The read comes next: the first blocks (which carry none) read while the model is still loading."""
    t0, c0 = time.perf_counter(), time.thread_time()
    reduced = tuple(run_reduce(r, job.vectors, job.staging.vectors) for r in carried
                    if job.vectors is not None and job.staging.vectors is not None)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    res = _run_block(job)
    if carried:
        res.seconds["reduce"], res.cpu_seconds["reduce"] = wall, cpu
    res.reduced = reduced
    return res


def _run_block(job: BlockJob) -> BlockResult:
    marks = [(time.perf_counter(), time.thread_time())]  # wall and this thread's CPU after each stage
    meta = job.meta
    data, valid = read_block(job.scene, meta.band_indexes, block_input_span(job.block, job.spec))
    marks.append((time.perf_counter(), time.thread_time()))
    pred = job.predictor()
    marks.append((time.perf_counter(), time.thread_time()))
    ran = tile_cores_valid(valid, job.block, job.spec)
    # vector scores and heads need the probabilities, classes do not
    want_probs = job.staging.probs is not None or job.vectors is not None
    feed = partial(pred.feed, scale=meta.scale_for(data.dtype), halo=job.spec.halo, batch_size=job.batch_size,
                   want_probs=want_probs, tta=job.tta)
    classes, probs = predict_block(feed, data, valid, ran, job.block, job.spec, job.batch_size, CLASS_NODATA,
                                   meta.n_outputs if want_probs else 0, PROB_NODATA)
    marks.append((time.perf_counter(), time.thread_time()))
    # extra heads (boundary, distance...) feed the vectoriser only
    heads = {name: probs[sl] for name, sl in meta.head_slices().items()} if probs is not None else {}
    probs = probs[:len(meta.classes)] if probs is not None else None
    h, w = classes.shape
    own = valid[job.spec.halo:job.spec.halo + h, job.spec.halo:job.spec.halo + w] & (classes != CLASS_NODATA)
    if not own.all():
        classes[~own] = CLASS_NODATA
        if probs is not None:
            probs[:, ~own] = PROB_NODATA
    marks.append((time.perf_counter(), time.thread_time()))
    win = job.block.window
    block_vectors = None
    if job.vectors is not None and probs is not None:  # heads (boundary, distance...) feed the instance split
        block_vectors = vectorize_block(classes, probs, heads, own, job.block.index, win, job.vectors)
    marks.append((time.perf_counter(), time.thread_time()))
    vectors = _write_parts(job, classes, probs, block_vectors)
    marks.append((time.perf_counter(), time.thread_time()))
    stages = ("read", "load", "predict", "stitch", "vectorize", "write")
    return BlockResult(job.block, vectors, int(ran.sum()), int(own.sum()),
                       {n: b[0] - a[0] for n, a, b in zip(stages, marks, marks[1:])},
                       {n: b[1] - a[1] for n, a, b in zip(stages, marks, marks[1:])})


def _write_parts(job: BlockJob, classes: np.ndarray, probs: np.ndarray | None,
                 block_vectors: Any) -> VectorParts | None:
    """The block's raster parts and vector parts, in the staging folders."""
    scene, win, staging = job.scene, job.block.window, job.staging
    for folder in (staging.classes, staging.probs, staging.vectors):
        if folder is not None:
            require_folder(folder)
    if staging.classes:
        write_raster_part(staging.classes, win, classes, scene.grid, CLASS_NODATA)
    if staging.probs and probs is not None:
        write_raster_part(staging.probs, win, probs, scene.grid, PROB_NODATA)
    if block_vectors is None or staging.vectors is None or job.vectors is None:
        return None
    return store_block_vectors(block_vectors, staging.vectors, job.vectors.layers())


def check_bundle_fits(scene: SceneInfo, meta: BundleMeta, bundle_name: str, resample: bool = False) -> None:
    """Bands, dtype (errors) and pixel size (a warning unless resampled) of a scene against a bundle."""
    select_bands(scene, meta, None, bundle_name)
    check_fit(scene, meta, bundle_name, resample)


@dataclass
class InferSummary:
    """What a run produced; the CLI prints it as one line."""

    objects: dict[str, int]
    outputs: list[str]
    megapixels: float
    valid_km2: float
    seconds: float
    stage_seconds: dict[str, float]
    tiles_run: int
    resampled: tuple[float, float] | None = None  # (scene GSD, model GSD) in metres when read at the model's
    # CPU seconds per stage: worker threads' block stages, this thread's writing and finishing (robust to a busy
    # machine, where the wall-clock stages are not)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    measures: dict[str, float] = field(default_factory=dict)  # per layer: metres (lines) or square metres
    layer_types: dict[str, str] = field(default_factory=dict)  # per layer: Polygon or LineString

    @property
    def mpx_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds else 0.0


def infer(scene_path: str | Path, out: str | Path | None, config: InferConfig, *, raster_out: str | Path | None = None,
          prob_out: str | Path | None = None, overwrite: bool = False, verbose: bool = False,
          progress: Callable[[int, int], None] | None = None, client: Any = None,
          inputs: Mapping[str, str | Path | None] | None = None) -> InferSummary:
    """Run a bundle over a scene and write the requested outputs; nothing is left half-written.

    ``client``: an existing ``distributed.Client`` to run on (``geoseg batch`` shares one between scenes);
    by default one is started for ``config.scheduler`` and closed at the end. ``inputs``: other files the run
    reads (a pipeline YAML...), which no output may be.
    """
    start = time.perf_counter()
    configure()  # the command's process-wide settings (geoseg.startup): once per process, a no-op after
    checked = check_run(scene_path, out, config, raster_out=raster_out, prob_out=prob_out, overwrite=overwrite,
                        inputs=inputs)
    scene, bundle_path, meta, spec, class_ids = checked.scene, checked.bundle, checked.meta, checked.spec, \
        checked.class_ids
    removed, freed = remove_stale([Path(p).absolute().parent for p in (out, raster_out, prob_out) if p])
    if removed:
        logging.getLogger("geoseg").info("removed %d temporary file(s), %.1f MB, left by killed runs", removed,
                                         freed / 1e6)
    scene_px = scene.width * scene.height
    scene, resampled = _on_model_grid(scene, meta, config)
    batch_size = config.batch_size or default_batch_size(resolve_device(config.device))  # bad --device fails here
    check_runtime(config.runtime, config.precision)  # an unknown or uninstalled runtime fails here

    workers = config.workers or cpu_count()
    block_size = config.block_size or auto_block_size(scene.height, scene.width, spec, workers, batch_size)
    # the largest blocks first, so the last tasks are small and workers finish together
    blocks = sorted(make_blocks(scene.height, scene.width, spec, block_size), key=lambda b: -b.n_tiles)
    logging.getLogger("geoseg").info(plan_line(scene, spec, blocks, workers, batch_size,
                                               str(resolve_device(config.device))))
    vspec = vector_spec(scene, meta, class_ids, checked.layers, config, block_side(block_size, spec)) if out else None
    stage: dict[str, float] = defaultdict(float)
    stage_cpu: dict[str, float] = defaultdict(float)
    with catch_interrupts() as interrupted, Outputs(scene, meta, vspec, out, raster_out, prob_out) as sink:
        jobs = (BlockJob(scene, b, spec, bundle_path, meta, config.device, batch_size, vspec, sink.staging,
                         config.runtime, config.precision, tta=config.tta) for b in blocks)
        stage["setup"] = time.perf_counter() - start
        # workers that share this process load the model while Dask starts
        runtime_key = (config.runtime, spec.tile, config.precision)
        preload = client is None and config.scheduler == "threads"
        start_client = nullcontext(client) if client is not None else dask_client(config.scheduler, workers, verbose)
        with preloading(bundle_path, config.device, preload, runtime_key), start_client as client:
            stage["cluster_start"] = time.perf_counter() - start - stage["setup"]
            run = _Run(client, sink, task_resources(client, config.device), interrupted, progress,
                       scene.width * scene.height)
            written = run.execute(jobs, INFLIGHT_PER_WORKER * workers)
            for totals, into in ((run.stage, stage), (run.stage_cpu, stage_cpu)):
                for kind, seconds in totals.items():
                    into[kind] += seconds
    km2 = run.valid_px * sink.m_per_px**2 / 1e6
    return InferSummary(sink.totals.counts, written, scene_px / 1e6, km2, time.perf_counter() - start, dict(stage),
                        run.tiles_run, resampled, dict(stage_cpu), sink.totals.measures, sink.layer_types)


def _on_model_grid(scene: SceneInfo, meta: BundleMeta, config: InferConfig
                   ) -> tuple[SceneInfo, tuple[float, float] | None]:
    """With ``--resample`` the whole pipeline runs on the model-GSD grid (raster outputs go back to the scene's):
    that scene, and (scene GSD, model GSD) when they differ."""
    if not config.resample:
        return scene, None
    file_gsd, scene = scene.gsd_m, scene.at_resolution(meta.gsd)
    if scene.native is None:
        return scene, None
    logging.getLogger("geoseg").info("%s: resampled from %.3g m to %.3g m (%dx%d -> %dx%d px)", scene.path,
                                     file_gsd, scene.gsd_m, scene.native.width, scene.native.height, scene.width,
                                     scene.height)
    return scene, (file_gsd, scene.gsd_m)


def vector_spec(scene: SceneInfo, meta: BundleMeta, class_ids: tuple[int, ...], layers: dict[int, str],
                config: InferConfig, side: int) -> VectorSpec:
    """What every block needs to vectorise: scene geometry, block side and the classes' post-processing."""
    unit = metres_per_unit(scene.crs, scene.transform)
    classes = tuple(ClassVectors(k, meta.classes[k].name, layers[k], config.post_for(meta.classes[k].name))
                    for k in class_ids)
    return VectorSpec(classes, scene.grid, side, scene.gsd_m, 1.0 if scene.crs.is_geographic else unit)


class Outputs:
    """The output files of one run, on the driver: their staging folders (where the tasks write the parts), the
    tracker of vector fragments and cells, the assembly tasks and the final renames. On any error (or Ctrl-C)
    the staging folders go."""

    def __init__(self, scene: SceneInfo, meta: BundleMeta, vspec: VectorSpec | None, out: str | Path | None,
                 raster_out: str | Path | None, prob_out: str | Path | None) -> None:
        self.scene, self.meta, self.vspec = scene, meta, vspec
        self.paths = tuple(Path(p) if p else None for p in (out, raster_out, prob_out))
        self.layer_types = vspec.layers() if vspec else {}
        self.totals = Totals({name: 0 for name in self.layer_types}, {name: 0.0 for name in self.layer_types})
        self.tracker = Tracker(vspec) if vspec else None
        self.m_per_px = scene.gsd_m
        self.staging = Staging()
        self.windows: list[Window] = []
        self.vector_parts: list[str] = []

    def __enter__(self) -> "Outputs":
        out, raster_out, prob_out = self.paths
        # names first, folders second: an interrupt between two mkdirs still finds every folder in abort()
        self.staging = Staging(*(staging_name(p) if p else None for p in (raster_out, prob_out, out)))
        try:
            for folder, subfolders in zip(self.folders_planned(), ((), (), (FRAGMENTS, CELLS, VECTORS))):
                if folder is not None:
                    make_staging(folder, subfolders)
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.abort()  # after a commit only the emptied folders are left

    def folders_planned(self) -> tuple[Path | None, Path | None, Path | None]:
        return self.staging.classes, self.staging.probs, self.staging.vectors

    def folders(self) -> list[Path]:
        return [f for f in (self.staging.classes, self.staging.probs, self.staging.vectors) if f is not None]

    def add(self, res: BlockResult) -> list[ReduceJob]:
        """Record a block's parts; returns the reductions it makes ready."""
        self.windows.append(res.block.window)
        if res.vectors is None or self.tracker is None:
            return []
        self.totals.merge(res.vectors.totals)
        self.vector_parts.append(res.vectors.part)
        return self.tracker.add(res.block.index, res.vectors)

    def reduced(self, job: ReduceJob, totals: Totals) -> None:
        self.totals.merge(totals)
        self.vector_parts.append(job.out)

    def raster_jobs(self) -> list[RasterAssembly]:
        """The COG assemblies, ready once every block is in."""
        scene, jobs = self.scene, []
        windows = tuple(self.windows)
        if self.staging.classes:
            jobs.append(RasterAssembly(self.staging.classes, windows, scene.grid, "uint8", 1,
                                       CLASS_NODATA, "NEAREST", ("class",), class_palette(self.meta), scene.native,
                                       "nearest"))
        if self.staging.probs:
            names = tuple(c.name for c in self.meta.classes)
            jobs.append(RasterAssembly(self.staging.probs, windows, scene.grid, "float32",
                                       len(names), PROB_NODATA, "AVERAGE", names, None, scene.native, "bilinear"))
        return jobs

    def vector_args(self) -> tuple[Any, ...] | None:
        """The GeoPackage assembly's arguments, once every reduction is done (None: no vectors)."""
        if self.tracker is None or self.staging.vectors is None or self.paths[0] is None:
            return None
        if self.tracker.pending():  # a leftover would mean a lost object
            raise RuntimeError(f"vector reduction left {self.tracker.pending()} fragment(s) unfinished")
        return (self.staging.vectors, self.paths[0], self.vector_parts, self.layer_types, self.scene.crs,
                layer_styles(self.vspec, self.meta))

    def commit(self, staged: list[tuple[Path, Path]]) -> list[str]:
        """Rename every complete file into place (the class COG first gets its style sidecars)."""
        for tmp, target in staged:  # written by the assembly tasks (staged, owned names): renamed here
            os.replace(tmp, target)
            if target == self.paths[1]:
                write_class_sidecars(target, class_palette(self.meta))
        return [str(target) for _, target in staged]

    def abort(self) -> None:
        for folder in self.folders():
            remove_staging(folder)


@dataclass(frozen=True)
class _BlockTask:
    """A block task in the driver's books, with the reductions it carries."""

    carried: tuple[ReduceJob, ...] = ()


class _Run:
    """The driver's loop over one run's tasks: block tasks streamed (at most ``inflight`` outstanding), each
    carrying the reductions the tracker made ready since the last one (tasks of their own once the blocks run
    out, or where blocks hold a GPU), then the assembly tasks."""

    def __init__(self, client: Any, sink: Outputs, resources: dict[str, float] | None, interrupted: Any,
                 progress: Callable[[int, int], None] | None, total_px: int) -> None:
        from distributed import as_completed

        self.client, self.sink, self.resources = client, sink, resources
        self.interrupted, self.progress, self.total_px = interrupted, progress, total_px
        # results pushed by the tasks (geoseg.results): no gather round trip per task
        self.pushed = pushed_results(client)
        self.running = as_completed(loop=client.loop)
        self.kinds: dict[str, Any] = {}  # future key -> its job: a _BlockTask, a ReduceJob or an assembly
        self.outstanding: set[Any] = set()
        # reductions ready and waiting for the next block task to carry them (see run_block); a task placed on a
        # GPU carries none, so that CPU work does not hold the device, nor does the run's tail
        self.carry = resources is None
        self.ready: list[ReduceJob] = []
        self.blocks_left = True
        self.stage: dict[str, float] = defaultdict(float)
        self.stage_cpu: dict[str, float] = defaultdict(float)
        self.tiles_run = self.valid_px = self.done_px = 0
        self.trim = HeapTrim(TRIM_EVERY_S)  # the threads scheduler's workers share this process's heap

    def submit(self, fn: Callable[..., Any], *args: Any, job: Any = None, **kw: Any) -> Any:
        fut = self.pushed.submit(self.client, fn, *args, **kw)
        self.kinds[fut.key] = job
        self.outstanding.add(fut)
        self.running.add(fut)
        return fut

    def results(self) -> Iterator[tuple[Any, Any]]:
        """``(job, result)`` of each task as it completes."""
        for fut in self.running:
            if self.interrupted.is_set():  # a Ctrl-C that Python swallowed still stops the run here
                raise KeyboardInterrupt
            self.outstanding.discard(fut)
            result = self.pushed.result(fut)  # a failed or cancelled task raises its error here
            fut.release()
            yield self.kinds.pop(fut.key), result

    def cancel(self) -> None:
        """On error or interruption (here or in a caller's progress callback): no task of this run goes on."""
        if self.outstanding:
            for fut in self.outstanding:
                self.pushed.forget(fut)
            self.client.cancel(list(self.outstanding))
            self.outstanding.clear()

    def execute(self, jobs: Iterator[BlockJob], inflight: int) -> list[str]:
        """The whole run: every block and reduction, then the assemblies and renames; returns the files written.
        On any error (or Ctrl-C) no task of this run goes on."""
        check_workers_see(self.client, self.sink.folders())
        try:
            self.blocks(jobs, inflight)
            return self.finish()
        except BaseException:
            self.cancel()
            raise

    def blocks(self, jobs: Iterator[BlockJob], inflight: int) -> None:
        """Every block, and every reduction the blocks make ready."""
        pending = iter(jobs)
        for _ in range(inflight):
            if not self._next_block(pending):
                break
        for job, res in self.results():
            t0, c0 = time.perf_counter(), time.thread_time()
            if isinstance(job, ReduceJob):
                self.sink.reduced(job, res)
            else:
                for carried, totals in zip(job.carried, res.reduced):
                    self.sink.reduced(carried, totals)
                self._block_done(res)
                self._next_block(pending)
            self.stage["track"] += time.perf_counter() - t0
            self.stage_cpu["track"] += time.thread_time() - c0
            if isinstance(job, _BlockTask) and self.progress:
                self.progress(self.done_px, self.total_px)
            self.trim.maybe()

    def _next_block(self, pending: Iterator[BlockJob]) -> bool:
        """Submit the next block with the reductions waiting for it; once the blocks run out, the waiting
        reductions go as tasks of their own. False when there was no block left."""
        job = next(pending, None) if self.blocks_left else None
        if job is None:
            self.blocks_left = False
            self._submit_reductions()
            return False
        carried = tuple(self.ready) if self.carry else ()
        self.ready.clear()
        self.submit(run_block, job, carried, resources=self.resources, job=_BlockTask(carried))
        return True

    def _submit_reductions(self) -> None:
        vs = self.sink.vspec
        for reduce_job in self.ready:
            self.submit(run_reduce, reduce_job, vs, self.sink.staging.vectors, job=reduce_job, priority=10)
        self.ready.clear()

    def _block_done(self, res: BlockResult) -> None:
        for name, sec in res.seconds.items():
            self.stage[name] += sec
        for name, sec in res.cpu_seconds.items():
            self.stage_cpu[name] += sec
        self.tiles_run += res.tiles_run
        self.valid_px += res.valid_px
        self.done_px += int(res.block.window.width * res.block.window.height)
        self.ready += self.sink.add(res)
        if not self.carry or not self.blocks_left:
            self._submit_reductions()

    def finish(self) -> list[str]:
        """The assembly tasks (one per output, side by side), then every file renamed into place."""
        t0, c0 = time.perf_counter(), time.thread_time()
        trim_heap()  # the model's buffers are no longer needed: hand them back before the files are built
        written = self._assemble()
        self.stage["finalize"] = time.perf_counter() - t0
        self.stage_cpu["finalize"] = time.thread_time() - c0
        return written

    def _assemble(self) -> list[str]:
        for raster in self.sink.raster_jobs():
            self.submit(assemble_raster, raster, job=("raster", raster))
        vector_args = self.sink.vector_args()
        if vector_args is not None:
            self.submit(assemble_vectors, *vector_args, job=("vectors", None))
        staged: list[tuple[Path, Path]] = []
        targets = {self.sink.staging.classes: self.sink.paths[1], self.sink.staging.probs: self.sink.paths[2]}
        for job, res in self.results():
            if job[0] == "raster":
                target = targets[job[1].folder]
                assert target is not None
                staged.append((res, target))
            else:
                staged += res
        if self.interrupted.is_set():
            raise KeyboardInterrupt
        order = {p: i for i, p in enumerate(self.sink.paths)}  # vectors, classes, probs: as before
        return self.sink.commit(sorted(staged, key=lambda st: order.get(st[1], 0)))
