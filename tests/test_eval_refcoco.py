"""RefCOCO REC precision@0.5 (box IoU) and RIS overall IoU on hand-computed boxes."""

from __future__ import annotations

import numpy as np

from referformer.evaluation import refcoco as R


def test_box_intersection_union():
    inter, union = R.box_intersection_union(
        [[0, 0, 10, 10], [0, 0, 2, 2]], [[5, 0, 15, 10], [3, 3, 4, 4]]
    )
    np.testing.assert_array_equal(inter, [50, 0])
    np.testing.assert_array_equal(union, [150, 5])


def test_rec_precision_strictly_greater_with_float32_epsilon():
    pred = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    gt = [[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 5]]  # IoU 1, 0.5, 0.5
    assert R.rec_precision(np.array(pred), np.array(gt)) == {0.5: 1 / 3}


def test_ris_overall_iou():
    assert R.ris_overall_iou([10, 30], [20, 60]) == 0.5
