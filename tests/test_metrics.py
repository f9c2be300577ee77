"""Metrics on hand-built cases whose values are worked out by hand."""

import numpy as np
import pytest
from shapely import box

from geoseg.metrics import object_scores, pixel_scores


def test_pixel_scores_by_hand():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1            # 4 truth pixels
    pred = np.zeros_like(truth)
    pred[:2, 1:3] = 1            # 4 predicted, 2 overlap
    s = pixel_scores(pred, truth, 1)
    assert s["iou"] == pytest.approx(2 / 6)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)


def test_object_scores_perfect_shifted_dropped_split():
    truth = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    assert object_scores(truth, truth)["f1"] == 1.0
    shifted = [box(2, 0, 12, 10), box(26, 0, 36, 10), box(40, 0, 50, 10)]  # IoU 8/12 = 0.67 and 4/16 = 0.25
    s = object_scores(shifted, truth)
    assert s["matched"] == 2 and s["f1"] == pytest.approx(2 / 3)
    dropped = truth[:2]
    s = object_scores(dropped, truth)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3)
    split = [box(0, 0, 10, 6), box(0, 6, 10, 10)] + truth[1:]  # 0.6 IoU piece matches, 0.4 does not
    s = object_scores(split, truth)
    assert s["matched"] == 3 and s["precision"] == pytest.approx(3 / 4)
    merged = [box(0, 0, 30, 10), truth[2]]  # one blob over two houses: IoU 1/3 with each
    assert object_scores(merged, truth)["matched"] == 1
