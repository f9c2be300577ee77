"""Score a prediction (class raster + GeoPackage) against vector ground truth, window by window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.windows import Window

from geoseg.metrics import confusion, object_scores, scores_from_counts
from geoseg.synth import label_window

CLASS_IDS = {"building": 1, "road": 2}


def score_prediction(class_raster: str | Path, truth: str | Path, pred_vectors: str | Path | None = None,
                     window: int = 2048) -> dict[str, dict[str, float]]:
    """Pixel IoU/precision/recall/F1 per class (truth rasterised per window) and building object F1."""
    layers = {name: pyogrio.read_dataframe(truth, layer=name) for name in ("buildings", "roads")}
    counts = {k: np.zeros(3) for k in CLASS_IDS}  # tp, fp, fn
    with rasterio.open(class_raster) as src:
        layers = {n: f.to_crs(src.crs) for n, f in layers.items()}
        for r in range(0, src.height, window):
            for c in range(0, src.width, window):
                win = Window(c, r, min(window, src.width - c), min(window, src.height - r))
                pred = src.read(1, window=win)
                lab = label_window(layers, src.window_transform(win), pred.shape)
                valid = pred != src.nodata
                for name, k in CLASS_IDS.items():
                    counts[name] += confusion((pred == k) & valid, (lab == k) & valid)
    out = {name: {f"pixel_{k}": v for k, v in scores_from_counts(*c).items()} for name, c in counts.items()}
    if pred_vectors is not None:
        found = pyogrio.read_dataframe(pred_vectors, layer="buildings")
        truth_b = layers["buildings"].to_crs(found.crs)
        out["building"].update({f"object_{k}": v for k, v in
                                object_scores(found.geometry.values, truth_b.geometry.values).items()})
    return out
