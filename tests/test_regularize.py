"""``--regularize``: squared footprints fit rasterised truth better than the plain outline, have right angles,
and never come out invalid or empty; shapes that are not rectilinear keep their plain outline."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy import ndimage

from geoseg.metrics import match_objects
from geoseg.pipeline import ClassPost
from geoseg.synth import SynthSpec, label_window, make_truth
from geoseg.vectorize.drive import collect, make_spec
from geoseg.vectorize.polygons import label_polygons, simplify_polygons
from geoseg.vectorize.regularize import HAUSDORFF_TOLERANCES, regularize, regularize_all

TOLERANCE_DEG = 1.0  # a corner counts as right when it is within this of 90°


def right_angled(poly: shapely.Polygon, corners: int | None = None) -> bool:
    """Every corner of every ring within TOLERANCE_DEG of a right angle (and, if given, that many corners)."""
    poly = shapely.simplify(poly, 0.0)
    n = 0
    for ring in [poly.exterior, *poly.interiors]:
        xy = np.asarray(ring.coords)[:-1]
        d = np.roll(xy, -1, axis=0) - xy
        turn = (np.diff(np.degrees(np.arctan2(d[:, 1], d[:, 0])), append=np.degrees(np.arctan2(d[0, 1], d[0, 0])))
                + 180) % 360 - 180
        if (np.abs(np.abs(turn) - 90) > TOLERANCE_DEG).any():
            return False
        n += len(xy)
    return corners is None or n == corners


def traced(truth: shapely.Polygon, shape: tuple[int, int]) -> shapely.Polygon:
    """The pixel outline of ``truth`` rasterised by the pixel-centre rule (as a model's perfect mask would be)."""
    mask = rasterize([(truth, 1)], out_shape=shape, dtype="uint8")
    return shapely.simplify(label_polygons(mask, Window(0, 0, shape[1], shape[0]))[1], 0.0)


def footprints(seed: int, n: int) -> list[shapely.Polygon]:
    """Rectangles and L-shapes of 8-30 px sides at random angles and sub-pixel offsets."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.uniform(8, 30, 2)
        if i % 2:
            w, e = rng.uniform(0.35, 0.6) * a, rng.uniform(6, 14)
            shape = shapely.Polygon([(0, 0), (a, 0), (a, b + e), (a - w, b + e), (a - w, b), (0, b)])
        else:
            shape = shapely.box(0, 0, a, b)
        turned = shapely.affinity.rotate(shape, rng.uniform(0, 90), origin=(0, 0))
        out.append(shapely.affinity.translate(turned, 40 + rng.uniform(0, 1), 40 + rng.uniform(0, 1)))
    return out


def iou(a: shapely.Polygon, b: shapely.Polygon) -> float:
    return shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))


def test_squared_rasterised_buildings_fit_truth_better_than_the_plain_outline():
    truths = footprints(0, 40)
    raw = np.array([traced(t, (100, 100)) for t in truths], dtype=object)
    plain = simplify_polygons(raw, 0.5)
    squared = regularize_all(raw, 2.0, plain)
    plain_iou = np.mean([iou(p, t) for p, t in zip(plain, truths)])
    squared_iou = np.mean([iou(s, t) for s, t in zip(squared, truths)])
    assert squared_iou >= plain_iou + 0.02, (squared_iou, plain_iou)
    corners = [len(t.exterior.coords) - 1 for t in truths]
    share = np.mean([right_angled(s, c) for s, c in zip(squared, corners)])
    assert share >= 0.95, share
    assert np.mean([right_angled(p, c) for p, c in zip(plain, corners)]) < 0.5  # the plain outlines are not


def test_vectoriser_on_a_truth_raster_squares_without_losing_matches():
    spec = SynthSpec(512, 384, seed=4011)
    truth = make_truth(spec)
    classes = label_window(truth, spec.transform, (spec.height, spec.width))

    def read(win: Window):
        c = classes[win.toslices()]
        return c, np.stack([np.where(c == k, 0.9, 0.05) for k in range(3)]).astype(np.float32), {}

    def run(**post: object) -> np.ndarray:
        vs = make_spec(classes.shape, 128, spec.transform, spec.crs,
                       [(1, "building", "buildings", ClassPost(min_area_m2=8.0, **post)),
                        (2, "road", "roads", ClassPost(min_area_m2=20.0))])
        return np.asarray(collect(read, vs)["buildings"].geometry.values)

    buildings = np.asarray(truth["buildings"].geometry.values)
    plain, squared = run(), run(regularize=True)
    p_pairs, s_pairs = match_objects(plain, buildings), match_objects(squared, buildings)
    assert len(s_pairs) >= len(p_pairs) >= 10
    assert np.mean([q for *_, q in s_pairs]) >= np.mean([q for *_, q in p_pairs]) + 0.01
    rect = [(i, j) for i, j, _ in s_pairs if len(buildings[j].exterior.coords) == 5]
    assert len(rect) >= 5
    assert np.mean([right_angled(squared[i], 4) for i, _ in rect]) >= 0.95


def blobs(seed: int) -> list[shapely.Polygon]:
    """Ragged masks (smoothed noise) of every size, traced: thin, holed, spiky, single pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for sigma in (0.7, 1.5, 3.0):
        field = ndimage.gaussian_filter(rng.random((90, 90)), sigma)
        mask = field > np.quantile(field, 0.6)
        labels, n = ndimage.label(mask)
        out += list(label_polygons(labels.astype(np.int32), Window(0, 0, labels.shape[1], labels.shape[0])).values())
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_regularize_never_returns_invalid_or_empty_geometry(seed: int):
    shapes = blobs(seed) + [shapely.box(0, 0, 1, 1), shapely.box(0, 0, 1, 9),
                            shapely.box(0, 0, 30, 30).difference(shapely.box(10, 10, 20, 20))]
    assert len(shapes) > 30
    for tolerance in (0.5, 2.0, 6.0):
        out = regularize_all(np.array(shapes, dtype=object), tolerance, simplify_polygons(np.array(shapes), 0.5))
        assert all(isinstance(g, shapely.Polygon) for g in out)
        assert shapely.is_valid(out).all() and not shapely.is_empty(out).any()
        # the outer ring never far from the pixels it came from
        far = shapely.hausdorff_distance(shapely.get_exterior_ring(out), shapely.get_exterior_ring(np.array(shapes)))
        assert (far <= HAUSDORFF_TOLERANCES * tolerance + 1.0 + 1e-9).all()


def test_shapes_that_are_not_rectilinear_keep_their_plain_outline():
    circle = traced(shapely.Point(50, 50).buffer(30), (100, 100))
    triangle = traced(shapely.Polygon([(10, 10), (90, 20), (40, 85)]), (100, 100))
    for shape in (circle, triangle):
        plain = simplify_polygons(np.array([shape]), 0.5)[0]
        assert regularize(shape, 2.0, plain) is plain
    assert regularize(shapely.Point(0, 0).buffer(20), 1.0).area == pytest.approx(np.pi * 400, rel=0.03)


def test_courtyards_are_squared_and_specks_filled():
    outer = shapely.affinity.rotate(shapely.box(20, 20, 80, 70), 23, origin=(50, 45))
    yard = shapely.affinity.rotate(shapely.box(38, 35, 62, 55), 23, origin=(50, 45))
    mask = rasterize([(outer.difference(yard), 1)], out_shape=(100, 100), dtype="uint8")
    mask[45, 30] = 0  # a one-pixel speck in the roof
    raw = shapely.simplify(label_polygons(mask, Window(0, 0, mask.shape[1], mask.shape[0]))[1], 0.0)
    assert len(raw.interiors) == 2
    out = regularize(raw, 2.0)
    assert len(out.interiors) == 1 and right_angled(out, 8)
    assert iou(out, outer.difference(yard)) > iou(raw, outer.difference(yard))
