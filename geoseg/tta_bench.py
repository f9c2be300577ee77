"""``geoseg bench tta``: the cost and the gain of ``--tta`` on looks no training run used.

Makes ``geoseg.synth`` scenes of the held-out looks (arid, nordic, tropical; seeds 4101, 4102 by default), runs
:func:`geoseg.infer.infer` with a bundle (default: the bundled model) at each number of views into ``FOLDER/tV``
(vectors and class raster beside a copy of the truth, the layout ``geoseg eval --many`` reads), then reports per
number of views the ``predict`` stage's CPU seconds per Mpx (worker threads: the model and the feed, robust to a
busy machine where wall time is not), its ratio to the first number of views, and the pooled scores of
:func:`geoseg.evaluate_many.evaluate_many`. Each run's cost is kept beside its prediction (``tV/NAME_cost.json``),
so a run already in the folder is reused, not made again: an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal, cast

LOOKS, SEEDS, VIEWS = ("arid", "nordic", "tropical"), (4101, 4102), (1, 4, 8)
Views = Literal[1, 4, 8]

log = logging.getLogger("geoseg")


def _scene(folder: Path, look: str, seed: int, size: int) -> tuple[str, Path]:
    from geoseg.synth import SynthSpec, write_scene

    name = f"{look}_{seed}"
    scene = folder / f"{name}.tif"
    if not scene.exists():
        write_scene(SynthSpec(size, size, seed=seed, look=look), scene, folder / f"{name}_truth.gpkg")
    return name, scene


def _run(folder: Path, name: str, scene: Path, views: int, workers: int, model: str | None) -> dict[str, Any]:
    """One scene at ``views`` views into ``folder/tV`` (unless there already); its cost."""
    from geoseg.infer import infer
    from geoseg.pipeline import InferConfig
    from geoseg.tempfiles import atomic_path

    out = folder / f"t{views}"
    out.mkdir(exist_ok=True)
    shutil.copy(folder / f"{name}_truth.gpkg", out / f"{name}_truth.gpkg")
    cost = out / f"{name}_cost.json"
    if cost.exists() and (out / f"{name}_pred.gpkg").exists():
        return dict(json.loads(cost.read_text()))
    s = infer(scene, out / f"{name}_pred.gpkg", InferConfig(model=model, tta=cast(Views, views), workers=workers),
              raster_out=out / f"{name}_classes.tif", overwrite=True)
    log.info("tta: %s at %d views in %.1f s", name, views, s.seconds)
    row = {"scene": name, "tta": views, "mpx": s.megapixels, "wall_s": round(s.seconds, 2),
           "cpu_s": {k: round(x, 3) for k, x in s.stage_cpu_seconds.items()}}
    with atomic_path(cost) as tmp:
        tmp.write_text(json.dumps(row))
    return row


def bench_tta(folder: str | Path, views: tuple[int, ...] = VIEWS, looks: tuple[str, ...] = LOOKS,
              seeds: tuple[int, ...] = SEEDS, size: int = 1024, workers: int = 2, model: str | None = None
              ) -> dict[str, Any]:
    """Per number of views: predict CPU s/Mpx and its ratio to the first of ``views``, and the pooled scores
    (every class of the truth) over every scene in ``FOLDER/tV``; ``runs``: each run's own figures."""
    from geoseg.evaluate_many import evaluate_many

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for look in looks:
        for seed in seeds:
            name, scene = _scene(folder, look, seed, size)
            runs += [_run(folder, name, scene, v, workers, model) for v in views]
    per_view: dict[str, dict[str, Any]] = {}
    for v in views:
        mine = [r for r in runs if r["tta"] == v]
        mpx = sum(r["mpx"] for r in mine)
        cost = round(sum(r["cpu_s"].get("predict", 0.0) for r in mine) / mpx, 3) if mpx else None
        per_view[str(v)] = {"predict_cpu_s_per_mpx": cost, "aggregate": evaluate_many(folder / f"t{v}")["aggregate"]}
    first = per_view[str(views[0])]["predict_cpu_s_per_mpx"]
    for row in per_view.values():
        cost = row["predict_cpu_s_per_mpx"]
        row["predict_cpu_ratio"] = round(cost / first, 3) if cost and first else None
    return {"bench": "tta", "model": model or "default", "size": size, "looks": list(looks), "seeds": list(seeds),
            "workers": workers, "views": per_view, "runs": runs}
