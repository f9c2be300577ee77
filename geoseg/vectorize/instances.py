"""Instance separation: touching buildings that the class raster joins into one blob become separate objects.

With a ``boundary`` head the object's interior (boundary probability < 0.5) seeds a watershed flooded over
the boundary probability; with a ``distance`` head its maxima seed one over the negated distance; otherwise the
maxima of the mask's own Euclidean distance transform (h-maxima of depth ``depth_px``) do. Each object is split
on a crop of the whole object only (its own pixels, 1 px of background around), so the result depends on the
object alone, never on the block that holds it: that keeps vectors partition-invariant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window
from scipy import ndimage
from skimage.morphology import local_maxima
from skimage.segmentation import watershed

from geoseg.vectorize.morph import edt, reconstruct

MIN_SEED_PX = 4  # seeds smaller than this are noise in a head, not a building
MOSAIC_PX = 1 << 20  # crops split together on one mosaic (see split_many)


def _seeds(binary: np.ndarray, min_px: int = 1) -> tuple[np.ndarray, int]:
    seeds, n = ndimage.label(binary)
    if n > 1 and min_px > 1:
        sizes = np.bincount(seeds.ravel(), minlength=n + 1)
        small = sizes < min_px
        small[0] = False
        if small.any():
            seeds[small[seeds]] = 0
            seeds, n = ndimage.label(seeds > 0)
    return seeds, n


def _dynamic_maxima(dist: np.ndarray, h: float) -> np.ndarray:
    """Maxima that stand at least ``h`` above the saddle to any higher one, each as ONE connected region.

    ``skimage.morphology.h_maxima`` marks only the tops, so a ridge with several equal peaks (the distance
    transform of a rotated, pixelated rectangle) gives several seeds and slices the object into strips; the
    regional maxima of the h-maxima transform (reconstruction of ``dist - h`` under ``dist``) are plateaus that
    keep such peaks together.
    """
    dist = np.asarray(dist, np.float32)
    return local_maxima(reconstruct(dist - np.float32(h), dist), connectivity=2)


def split_instances(mask: np.ndarray, heads: dict[str, np.ndarray], depth_px: float) -> np.ndarray:
    """Instance labels (1..n, 0 outside) of one connected object ``mask`` (already padded with background)."""
    energy: np.ndarray
    if "boundary" in heads:
        energy = heads["boundary"].astype(np.float64)
        seeds, n = _seeds(mask & (energy < 0.5), MIN_SEED_PX)
    elif "distance" in heads:
        dist = np.where(mask, heads["distance"], 0).astype(np.float32)
        energy = -dist
        seeds, n = _seeds(_dynamic_maxima(dist, 0.05) & mask)
    else:
        dist = edt(mask)
        energy = -dist
        seeds, n = _seeds(_dynamic_maxima(dist, depth_px) & mask)
    if n <= 1:
        return mask.astype(np.int32)
    return watershed(energy, seeds, mask=mask).astype(np.int32)


def _shelves(shapes: list[tuple[int, int]], width: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Top-left corners packing rectangles (tallest first, 1-px gaps) into rows of ``width``; the total shape."""
    order = sorted(range(len(shapes)), key=lambda i: -shapes[i][0])
    corners: list[tuple[int, int]] = [(0, 0)] * len(shapes)
    top, left, row_h, right = 1, 1, 0, 0
    for i in order:
        h, w = shapes[i]
        if left > 1 and left + w + 1 > width:
            top, left, row_h = top + row_h + 1, 1, 0
        corners[i] = (top, left)
        left, row_h, right = left + w + 1, max(row_h, h), max(right, left + w + 1)
    return corners, (top + row_h + 1, max(right, 2))


def split_many(masks: list[np.ndarray], heads: list[dict[str, np.ndarray]], depth_px: float) -> list[np.ndarray]:
    """:func:`split_instances` of many padded object crops, with the same result as one by one but one
    h-maxima pass for all of them (a reconstruction per object cost more than everything else together).

    The crops are laid out on one mosaic, separated by a barrier lower than any value: grey reconstruction
    cannot flow through it and regional maxima never join across it, and a crop's distance transform is its own
    (its 1-px background ring is nearer than anything outside). Boundary-head seeds are cheap and stay per crop.
    """
    if not masks:
        return []
    if "boundary" in heads[0]:
        return [split_instances(m, hd, depth_px) for m, hd in zip(masks, heads)]
    out, start, area = [], 0, 0
    for i, m in enumerate(masks):  # mosaics of about a megapixel: bounded working memory
        area += m.size
        if area >= MOSAIC_PX or i == len(masks) - 1:
            out += _split_mosaic(masks[start:i + 1], heads[start:i + 1], depth_px)
            start, area = i + 1, 0
    return out


def _split_mosaic(masks: list[np.ndarray], heads: list[dict[str, np.ndarray]], depth_px: float
                  ) -> list[np.ndarray]:
    corners, shape = _shelves([m.shape for m in masks], max(512, max(m.shape[1] for m in masks) + 2))
    views = [(slice(r, r + m.shape[0]), slice(c, c + m.shape[1])) for (r, c), m in zip(corners, masks)]
    inside = np.zeros(shape, bool)
    mosaic = np.zeros(shape, bool)
    dist = np.zeros(shape, np.float32)
    for m, hd, v in zip(masks, heads, views):
        inside[v] = True
        mosaic[v] = m
        if "distance" in hd:
            dist[v] = np.where(m, hd["distance"], 0)
    h = np.float32(0.05 if "distance" in heads[0] else depth_px)
    if "distance" not in heads[0]:
        dist = edt(mosaic)
    barrier = -h - 1
    rec = reconstruct(np.where(inside, dist - h, barrier), np.where(inside, dist, barrier))
    # seed regions never cross crops (each is ringed by background), so one labelling serves them all
    regions, _ = ndimage.label(local_maxima(rec, connectivity=2) & mosaic)
    out = []
    for m, v in zip(masks, views):
        seeds, n = _renumber(regions[v])
        out.append(m.astype(np.int32) if n <= 1 else watershed(-dist[v], seeds, mask=m).astype(np.int32))
    return out


def _renumber(regions: np.ndarray) -> tuple[np.ndarray, int]:
    """A crop's seed regions numbered 1..n in raster order, as labelling the crop alone would number them."""
    at = regions > 0
    values = regions[at]
    if not values.size or values.min() == values.max():
        return regions, int(values.size > 0)
    unique, inverse = np.unique(values, return_inverse=True)
    seeds = np.zeros(regions.shape, np.int32)
    seeds[at] = inverse + 1
    return seeds, len(unique)


def unsplittable(mask: np.ndarray, labels: np.ndarray, n: int, heads: dict[str, np.ndarray]) -> np.ndarray:
    """Per object 0..n of a block's label raster: True where :func:`split_instances` on the object's own crop
    surely returns it whole, found in one whole-block pass instead of one seed search per object.

    Exact with a boundary head: the seeds (4-connected interior regions of at least ``MIN_SEED_PX``) of an object
    are the block's seeds inside it, and fewer than two leave it whole. Without one (distance-based seeds) every
    object is still split on its own crop: the block's distance transform and h-maxima can differ from the
    object's own where objects touch diagonally, so no such shortcut is exact there.
    """
    whole = np.zeros(n + 1, bool)
    if "boundary" not in heads:
        return whole
    seeds, k = ndimage.label(mask & (np.asarray(heads["boundary"], np.float32) < 0.5))  # as on a crop
    at = np.flatnonzero(seeds)
    owner = np.zeros(k + 1, np.int64)
    owner[seeds.ravel()[at]] = labels.ravel()[at]
    big = np.bincount(seeds.ravel()[at], minlength=k + 1) >= MIN_SEED_PX
    big[0] = False
    return np.bincount(owner[big], minlength=n + 1) <= 1


@dataclass
class ObjectCrop:
    """One whole object of a class: its mask and per-pixel values on ``window`` of the scene grid."""

    window: Window                      # where the arrays lie in the scene (its pixel grid: VectorSpec.grid)
    mask: np.ndarray                    # bool, only this object's pixels
    prob: np.ndarray                    # float32 class probability (0 outside the mask)
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    whole: bool = False                 # known to stay one instance (see unsplittable): no split needed


def pad1(a: np.ndarray) -> np.ndarray:
    """``np.pad(a, 1)`` of a 2-D array without its generic machinery (a tenth of the cost per small crop)."""
    out = np.zeros((a.shape[0] + 2, a.shape[1] + 2), a.dtype)
    out[1:-1, 1:-1] = a
    return out


def crop_object(labels: np.ndarray, value: int, sl: tuple[slice, slice], prob: np.ndarray,
                heads: dict[str, np.ndarray], block: Window) -> ObjectCrop:
    """The crop of object ``value`` of a label raster on window ``block`` of the scene."""
    mask = labels[sl] == value
    at = Window(block.col_off + sl[1].start, block.row_off + sl[0].start, mask.shape[1], mask.shape[0])
    return ObjectCrop(at, mask, np.where(mask, prob[sl], 0).astype(np.float32),
                      {k: np.where(mask, v[sl], 0).astype(np.float32) for k, v in heads.items()})
