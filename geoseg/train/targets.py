"""Multitask targets generated from the labels: object boundaries and a per-object distance transform.

After ResUNet-a (Diakogiannis et al. 2020): the boundary head learns a thin band along object edges (it
separates touching buildings), the distance head the distance to the nearest edge normalised to 1 at each
object's centre; a colour head reconstructs the (0..1 scaled) image itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries


SHARED = 2.0  # boundary target value on walls shared by two objects: the loss weighs them apart, counts them as 1


def boundary_target(instances: np.ndarray, half_width: int, shared: bool = False) -> np.ndarray:
    """1.0 within ``half_width`` pixels of any object edge (including edges between touching objects); with
    ``shared``, :data:`SHARED` on the band of walls between touching objects (no background beside them)."""
    edges = find_boundaries(instances, mode="inner", background=0)
    walls = edges & ~find_boundaries(instances > 0, mode="inner") if shared else None
    if half_width > 1:
        edges = ndimage.binary_dilation(edges, iterations=half_width - 1)
        if walls is not None:
            walls = ndimage.binary_dilation(walls, iterations=half_width - 1) & edges
    out = edges.astype(np.float32)
    if walls is not None:
        out[walls] = SHARED
    return out


def distance_target(instances: np.ndarray) -> np.ndarray:
    """Euclidean distance to the object's edge, divided by the object's maximum: 0 outside, 1 at its centre."""
    inside = (instances > 0) & ~find_boundaries(instances, mode="inner", background=0)
    dist = ndimage.distance_transform_edt(inside).astype(np.float32)
    ids = np.unique(instances[instances > 0])
    if not len(ids):
        return dist
    peak = np.zeros(int(instances.max()) + 1, np.float32)
    peak[ids] = ndimage.maximum(dist, labels=instances, index=ids)
    scale = peak[instances]
    return np.divide(dist, scale, out=np.zeros_like(dist), where=scale > 0)
