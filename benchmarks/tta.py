"""Cost and gain of ``--tta`` on held-out looks (the README's Benchmarks figures).

    python benchmarks/tta.py DIR [VIEWS...]        then: geoseg eval --many DIR/t1 (and DIR/t4, DIR/t8)

Makes 1024² ``geoseg synth`` scenes of the looks no training run used (arid, nordic, tropical; seeds 4101,
4102), runs ``infer`` with the bundled model at each number of views (default 1, 4 and 8) into DIR/tV (vectors
and class raster beside a copy of the truth, as ``geoseg eval --many`` reads a folder), and appends each run's
CPU seconds per stage (worker threads' ``predict`` = the model and the feed) to DIR/cost.jsonl.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from geoseg.infer import infer
from geoseg.pipeline import InferConfig

LOOKS, SEEDS = ("arid", "nordic", "tropical"), (4101, 4102)


def main() -> None:
    root = Path(sys.argv[1])
    views = [int(v) for v in sys.argv[2:]] or [1, 4, 8]
    root.mkdir(parents=True, exist_ok=True)
    for look in LOOKS:
        for seed in SEEDS:
            name = f"{look}_{seed}"
            scene = root / f"{name}.tif"
            if not scene.exists():
                subprocess.run([sys.executable, "-m", "geoseg", "synth", str(scene), "--size", "1024", "--seed",
                                str(seed), "--look", look, "--truth", str(root / f"{name}_truth.gpkg")], check=True)
            for v in views:
                out = root / f"t{v}"
                out.mkdir(exist_ok=True)
                shutil.copy(root / f"{name}_truth.gpkg", out / f"{name}_truth.gpkg")
                if (out / f"{name}_pred.gpkg").exists():
                    continue
                s = infer(scene, out / f"{name}_pred.gpkg", InferConfig(tta=v, workers=2),
                          raster_out=out / f"{name}_classes.tif")
                row = {"scene": name, "tta": v, "mpx": s.megapixels, "wall_s": round(s.seconds, 2),
                       "cpu_s": {k: round(x, 3) for k, x in s.stage_cpu_seconds.items()}}
                print(json.dumps(row), flush=True)
                with open(root / "cost.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
