"""The OpenCV morphology equals the scikit-image/SciPy results it replaces."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import reconstruction

from geoseg.vectorize import morph


def blobs(seed: int, shape: tuple[int, int] = (160, 220)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    m = np.zeros(shape, bool)
    for _ in range(25):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 30)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    m[rng.integers(0, shape[0]), :] = True  # a long thin strip: values travel far
    return m


@pytest.mark.parametrize("sweeps", [morph.SWEEPS, 3])  # 3: skimage must finish the job
def test_reconstruct_equals_skimage(monkeypatch, sweeps):
    monkeypatch.setattr(morph, "SWEEPS", sweeps)
    for seed in range(3):
        mask = blobs(seed)
        dist = ndimage.distance_transform_edt(mask).astype(np.float32)
        marker = np.where(mask, dist - np.float32(2), -3).astype(np.float32)
        ours = morph.reconstruct(marker, np.where(mask, dist, -3))
        ref = reconstruction(marker, np.where(mask, dist, -3).astype(np.float32), method="dilation")
        assert ours.dtype == np.float32
        assert np.array_equal(ours, ref)
        assert (ours > marker).sum() > 100  # not vacuous: the flood raised many pixels


def test_edt_equals_scipy_exactly_wherever_the_object_lies():
    """Bit for bit, alone or among other objects: OpenCV's own distances differ by ~1e-6 between the two, which
    moved watershed lines at ties (vectors then depended on which blocks were split together)."""
    mask = np.pad(blobs(5), 1)
    ours = morph.edt(mask)
    assert np.array_equal(ours, ndimage.distance_transform_edt(mask).astype(np.float32))
    crowd = np.pad(blobs(6, (400, 500)), 1)
    crowd[100:100 + mask.shape[0], 150:150 + mask.shape[1]] = mask  # its 1-px ring separates it from the rest
    assert np.array_equal(morph.edt(crowd)[100:100 + mask.shape[0], 150:150 + mask.shape[1]], ours)
