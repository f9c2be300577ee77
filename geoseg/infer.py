"""``infer``: scene → blocks (Dask) → tiles → model → stitch → COG rasters + GeoPackage vectors.

This page wires the data-flow modules together; each step lives in its own module.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from geoseg.allocator import HeapTrim, trim_heap
from geoseg.engine import catch_interrupts, dask_client, stream, task_resources
from geoseg.bands import select_bands
from geoseg.preflight import check_fit, check_run
from geoseg.plan import plan_line
from geoseg.preload import preloading
from geoseg.tempfiles import remove_stale
from geoseg.export import RasterSink, VectorSink
from geoseg.styles import class_palette, layer_styles
from geoseg.summary import layer_measure
from geoseg.grid import Block, TileSpec, auto_block_size, block_input_span, block_side, make_blocks
from geoseg.models.bundle import BundleMeta
from geoseg.pipeline import InferConfig
from geoseg.predict import cpu_count, default_batch_size, get_predictor, resolve_device
from geoseg.runtime import check_runtime
from geoseg.scene import SceneInfo, at_gsd, metres_per_unit, read_block
from geoseg.stitch import predict_block, tile_cores_valid
from geoseg.vectorize import BlockVectors, ClassVectors, Reducer, VectorSpec, vectorize_block

CLASS_NODATA = 255
TRIM_EVERY_S = 30.0  # how often the run gives freed heap pages back (see geoseg.allocator.HeapTrim)
PROB_NODATA = -1.0


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
    want_probs: bool = False  # probabilities travel back to the client only when they are written
    runtime: str = "torch"    # geoseg.runtime
    precision: str = "fp32"
    tta: int = 1              # views averaged per tile (geoseg.tta)

    def predictor(self) -> Any:
        return get_predictor(self.bundle, self.device, self.runtime, self.spec.tile, self.precision)


@dataclass
class BlockResult:
    block: Block
    classes: np.ndarray             # uint8 (h, w), CLASS_NODATA where invalid
    probs: np.ndarray | None        # float32 (k, h, w), PROB_NODATA where invalid (if asked for)
    vectors: BlockVectors | None
    tiles_run: int
    valid_px: int
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the worker thread's CPU per stage


def run_block(job: BlockJob) -> BlockResult:
    """Read a block with its halo, predict its tiles in batches, stitch the cores, polygonise.

    The read comes first: the first blocks read while the model is still loading."""
    marks = [(time.perf_counter(), time.thread_time())]  # wall and this thread's CPU after each stage
    meta = job.meta
    r0, r1, c0, c1 = block_input_span(job.block, job.spec)
    data, valid = read_block(job.scene, meta.band_indexes, (r0, r1), (c0, c1))
    marks.append((time.perf_counter(), time.thread_time()))
    pred = job.predictor()
    marks.append((time.perf_counter(), time.thread_time()))
    ran = tile_cores_valid(valid, job.block, job.spec)
    want_probs = job.want_probs or job.vectors is not None  # vector scores and heads need them, classes do not
    feed = partial(pred.feed, scale=meta.scale_for(data.dtype), halo=job.spec.halo, batch_size=job.batch_size,
                   want_probs=want_probs, tta=job.tta)
    classes, probs = predict_block(feed, data, valid, ran, job.block, job.spec, job.batch_size, CLASS_NODATA,
                                   meta.n_outputs if want_probs else 0, PROB_NODATA)
    marks.append((time.perf_counter(), time.thread_time()))
    # extra heads (boundary, distance...) stay in the worker: block-sized arrays for the vectoriser
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
    vectors = None
    if job.vectors is not None and probs is not None:  # heads (boundary, distance...) feed the instance split
        vectors = vectorize_block(classes, probs, heads, own, job.block.index, int(win.row_off), int(win.col_off),
                                  job.vectors)
    marks.append((time.perf_counter(), time.thread_time()))
    stages = ("read", "load", "predict", "stitch", "vectorize")
    return BlockResult(job.block, classes, probs if job.want_probs else None, vectors, int(ran.sum()), int(own.sum()),
                       {n: b[0] - a[0] for n, a, b in zip(stages, marks, marks[1:])},
                       {n: b[1] - a[1] for n, a, b in zip(stages, marks, marks[1:])})


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
    checked = check_run(scene_path, out, config, raster_out=raster_out, prob_out=prob_out, overwrite=overwrite,
                        inputs=inputs)
    scene, bundle_path, meta, spec, class_ids = checked.scene, checked.bundle, checked.meta, checked.spec, \
        checked.class_ids
    removed, freed = remove_stale([Path(p).absolute().parent for p in (out, raster_out, prob_out) if p])
    if removed:
        logging.getLogger("geoseg").info("removed %d temporary file(s), %.1f MB, left by killed runs", removed,
                                         freed / 1e6)
    scene_px, resampled = scene.width * scene.height, None
    if config.resample:  # the whole pipeline runs on the model-GSD grid; raster outputs go back to the scene's
        file_gsd, scene = scene.gsd_m, at_gsd(scene, meta.gsd)
        if scene.native is not None:
            resampled = (file_gsd, scene.gsd_m)
            logging.getLogger("geoseg").info("%s: resampled from %.3g m to %.3g m (%dx%d -> %dx%d px)", scene.path,
                                             file_gsd, scene.gsd_m, scene.native.width, scene.native.height,
                                             scene.width, scene.height)
    batch_size = config.batch_size or default_batch_size(resolve_device(config.device))  # bad --device fails here
    check_runtime(config.runtime, config.precision)  # an unknown or uninstalled runtime fails here

    workers = config.workers or cpu_count()
    block_size = config.block_size or auto_block_size(scene.height, scene.width, spec, workers, batch_size)
    # the largest blocks first, so the last tasks are small and workers finish together
    blocks = sorted(make_blocks(scene.height, scene.width, spec, block_size), key=lambda b: -b.n_tiles)
    logging.getLogger("geoseg").info(plan_line(scene, spec, blocks, workers, batch_size,
                                               str(resolve_device(config.device))))
    vspec = vector_spec(scene, meta, class_ids, checked.layers, config, block_side(block_size, spec)) if out else None
    jobs = (BlockJob(scene, b, spec, bundle_path, meta, config.device, batch_size, vspec, bool(prob_out),
                     config.runtime, config.precision, tta=config.tta) for b in blocks)
    stage: dict[str, float] = defaultdict(float)
    stage_cpu: dict[str, float] = defaultdict(float)
    tiles_run = valid_px = done_px = 0
    with catch_interrupts() as interrupted, Outputs(scene, meta, vspec, out, raster_out, prob_out) as sink:
        stage["setup"] = time.perf_counter() - start
        # workers that share this process load the model while Dask starts
        runtime_key = (config.runtime, spec.tile, config.precision)
        preload = client is None and config.scheduler == "threads"
        start_client = nullcontext(client) if client is not None else dask_client(config.scheduler, workers, verbose)
        with preloading(bundle_path, config.device, preload, runtime_key), start_client as client:
            stage["cluster_start"] = time.perf_counter() - start - stage["setup"]
            resources = task_resources(client, config.device)
            for res in stream(client, run_block, jobs, inflight=2 * workers, resources=resources):
                if interrupted.is_set():  # a Ctrl-C that Python swallowed still stops the run here
                    raise KeyboardInterrupt
                t_write, c_write = time.perf_counter(), time.thread_time()
                sink.add(res)
                for name, sec in res.seconds.items():
                    stage[name] += sec
                for name, sec in res.cpu_seconds.items():
                    stage_cpu[name] += sec
                tiles_run += res.tiles_run
                valid_px += res.valid_px
                done_px += int(res.block.window.width * res.block.window.height)
                stage["write"] += time.perf_counter() - t_write
                stage_cpu["write"] += time.thread_time() - c_write
                if progress:
                    progress(done_px, scene.width * scene.height)
        t_final, c_final = time.perf_counter(), time.thread_time()
        trim_heap()  # the model's buffers are no longer needed: hand them back before the COGs are built
        sink.finish()
        if interrupted.is_set():
            raise KeyboardInterrupt
        written = sink.commit()
        stage["finalize"] = time.perf_counter() - t_final
        stage_cpu["finalize"] = time.thread_time() - c_final
    km2 = valid_px * sink.m_per_px**2 / 1e6
    return InferSummary(sink.counts, written, scene_px / 1e6, km2, time.perf_counter() - start, dict(stage),
                        tiles_run, resampled, dict(stage_cpu), sink.measures, sink.layer_types)


def vector_spec(scene: SceneInfo, meta: BundleMeta, class_ids: tuple[int, ...], layers: dict[int, str],
                config: InferConfig, side: int) -> VectorSpec:
    """What every block needs to vectorise: scene geometry, block side and the classes' post-processing."""
    unit = metres_per_unit(scene.crs, scene.transform)
    classes = tuple(ClassVectors(k, meta.classes[k].name, layers[k], config.post_for(meta.classes[k].name))
                    for k in class_ids)
    return VectorSpec(classes, scene.transform, scene.crs.to_wkt(), (scene.height, scene.width), side,
                      scene.gsd_m, 1.0 if scene.crs.is_geographic else unit)


class Outputs:
    """The output files of one run: rasters written per block, finished vectors appended as they come, objects
    and cells cut by block edges finished by the reduction as soon as their blocks are in. On any error (or
    Ctrl-C) every temporary file is removed."""

    def __init__(self, scene: SceneInfo, meta: BundleMeta, vspec: VectorSpec | None, out: str | Path | None,
                 raster_out: str | Path | None, prob_out: str | Path | None) -> None:
        self.scene, self.meta, self.vspec = scene, meta, vspec
        self.names = [c.name for c in meta.classes]
        self.paths = (out, raster_out, prob_out)
        self.layer_types = vspec.layers() if vspec else {}
        self.counts = {name: 0 for name in self.layer_types}
        self.measures = {name: 0.0 for name in self.layer_types}  # metres of lines, square metres of polygons
        self.reducer = Reducer(vspec, trim_every_s=None) if vspec else None
        self.trim = HeapTrim(TRIM_EVERY_S)
        self.m_per_px = scene.gsd_m
        self.sinks: list[RasterSink | VectorSink] = []
        self.classes = self.probs = self.vectors = None

    def __enter__(self) -> "Outputs":
        out, raster_out, prob_out = self.paths
        try:
            if raster_out:
                self.classes = RasterSink(raster_out, self.scene, 1, "uint8", CLASS_NODATA, "NEAREST", ("class",),
                                          regrid="nearest", palette=class_palette(self.meta))
                self.sinks.append(self.classes)
            if prob_out:
                self.probs = RasterSink(prob_out, self.scene, len(self.names), "float32", PROB_NODATA, "AVERAGE",
                                        tuple(self.names), regrid="bilinear")
                self.sinks.append(self.probs)
            if out:
                self.vectors = VectorSink(out, self.layer_types, self.scene.crs, styles=layer_styles(self.vspec,
                                                                                                     self.meta))
                self.sinks.append(self.vectors)
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is not None:
            self.abort()

    def add(self, res: BlockResult) -> None:
        """Write a block's rasters and every vector that is final once this block is in."""
        if self.classes:
            self.classes.write(res.block.window, res.classes)
        if self.probs and res.probs is not None:
            self.probs.write(res.block.window, res.probs)
        if self.reducer is not None and res.vectors is not None:
            for layer, frame in self.reducer.add(res.vectors):
                self.counts[layer] += len(frame)
                self.measures[layer] += layer_measure(frame, self.layer_types[layer])
                if self.vectors is not None:
                    self.vectors.add(layer, frame)
        self.trim.maybe()

    def finish(self) -> None:
        """Every block is in, so nothing may be pending (a leftover would mean a lost object)."""
        if self.reducer is not None and self.reducer.pending():
            raise RuntimeError(f"vector reduction left {self.reducer.pending()} fragment(s) unfinished")
        if self.reducer is not None:
            self.reducer.close()  # its folder of parked frontier data

    def commit(self) -> list[str]:
        written = []
        for sink in self.sinks:
            done = sink.commit()
            written += [str(p) for p in (done if isinstance(done, list) else [done])]
        return written

    def abort(self) -> None:
        for s in self.sinks:
            s.abort()
