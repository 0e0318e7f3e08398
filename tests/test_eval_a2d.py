"""A2D / JHMDB-Sentences metrics: float32 epsilon IoU, tie rule, P@K, IoUs, both mAP protocols."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from referformer.errors import DatasetFormatError
from referformer.evaluation import a2d as A


def rle(mask):
    out = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    out["counts"] = out["counts"].decode("ascii")
    return out


@pytest.mark.parametrize(
    "inter, union, value, counted",
    [
        (1, 2, 0.5000002384185791, [0.5]),
        (16, 32, 0.5000000596046448, [0.5]),
        (8, 16, 0.5, []),
        (32, 64, 0.5, []),
        (100, 200, 0.5, []),
        (300, 500, 0.6000000238418579, [0.5, 0.6]),
        (400, 500, 0.800000011920929, [0.5, 0.6, 0.7, 0.8]),
        (700, 1000, 0.699999988079071, [0.5, 0.6]),
        (900, 1000, 0.8999999761581421, [0.5, 0.6, 0.7, 0.8]),
    ],
)
def test_float32_epsilon_iou_and_thresholds(inter, union, value, counted):
    (iou,) = A.epsilon_iou([inter], [union])
    assert iou == value
    p = A.precision_at_k([iou])
    assert [k for k, v in p.items() if v == 1.0] == counted


def test_epsilon_iou_empty_cases():
    empty_empty, empty_vs_gt = A.epsilon_iou([0, 0], [0, 200])
    assert empty_empty == 1.0
    assert 0 < empty_vs_gt < 1e-8


def test_precision_at_k_fraction():
    p = A.precision_at_k([0.95, 0.55, 0.5, 0.0])
    assert p == {0.5: 0.5, 0.6: 0.25, 0.7: 0.25, 0.8: 0.25, 0.9: 0.25}


def test_stable_sort_tie_rule_last_wins():
    assert A.best_prediction_index([0.3, 0.9, 0.9, 0.1]) == 2
    assert A.best_prediction_index([0.5]) == 0


def test_overall_iou_and_no_union():
    assert A.overall_iou([10, 0, 30], [20, 40, 40]) == 0.4
    assert A.overall_iou([0, 0], [0, 0]) == 1.0  # documented: the original divides by zero


H, W = 20, 30


def _two_sample_case():
    g1 = np.zeros((H, W))
    g1[2:10, 3:13] = 1  # 80 px
    g2 = np.zeros((H, W))
    g2[5:15, 5:25] = 1  # 200 px
    gt = {
        "images": [{"id": "a", "height": H, "width": W}, {"id": "b", "height": H, "width": W}],
        "annotations": [
            {
                "id": 1,
                "image_id": "a",
                "segmentation": rle(g1),
                "area": 80.0,
                "iscrowd": 0,
                "category_id": 1,
            },
            {
                "id": 2,
                "image_id": "b",
                "segmentation": rle(g2),
                "area": 200.0,
                "iscrowd": 0,
                "category_id": 1,
            },
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    empty = np.zeros((H, W))
    preds = [
        {"image_id": "a", "category_id": 1, "segmentation": rle(g1), "score": 0.9},
        {"image_id": "a", "category_id": 1, "segmentation": rle(empty), "score": 0.2},
        {"image_id": "b", "category_id": 1, "segmentation": rle(empty), "score": 0.95},
        {"image_id": "b", "category_id": 1, "segmentation": rle(g2), "score": 0.5},
    ]
    return gt, preds


def test_map_both_protocols_hand_derived():
    gt, preds = _two_sample_case()
    r = A.evaluate_a2d(gt, preds, progress=False).to_dict()
    # all queries, by score: FP(b, empty), TP(a), TP(b), FP(a, empty) -> interpolated P = 2/3
    assert r["mAP"] == pytest.approx(2 / 3, abs=1e-12)
    assert r["AP50"] == pytest.approx(2 / 3, abs=1e-12) and r["AP_small"] == pytest.approx(
        2 / 3, abs=1e-12
    )
    assert r["AP_medium"] == -1.0 and r["AP_large"] == -1.0  # no GT in those area ranges
    # best query only: FP(b, 0.95), TP(a, 0.9) -> P = 1/2 on recall 0..0.5 (51 of 101 points)
    assert r["mAP_best_query"] == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    assert r["P@0.5"] == 0.5 and r["P@0.9"] == 0.5
    assert r["overall_iou"] == 80 / 280
    assert r["mean_iou"] == np.mean([1.0, float(A.epsilon_iou([0], [200])[0])])
    assert [s["image_id"] for s in r["per_sample"]] == ["a", "b"]
    assert r["per_sample"][1]["intersection"] == 0 and r["per_sample"][1]["union"] == 200


def test_ground_truth_as_prediction_scores_one():
    gt, _ = _two_sample_case()
    preds = [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "segmentation": a["segmentation"],
            "score": 1.0,
        }
        for a in gt["annotations"]
    ]
    r = A.evaluate_a2d(gt, preds, progress=False).to_dict()
    assert r["mAP"] == pytest.approx(1.0) and r["mAP_best_query"] == pytest.approx(1.0)
    assert r["overall_iou"] == 1.0 and r["mean_iou"] == 1.0 and r["P@0.9"] == 1.0


def test_shifted_prediction_hand_computed():
    gt, _ = _two_sample_case()
    g = np.zeros((H, W))
    g[2:10, 3:13] = 1
    shifted = np.roll(g, 2, axis=1)  # I = 8*8 = 64, U = 96
    preds = [
        {"image_id": "a", "segmentation": rle(shifted), "score": 0.5},
        {"image_id": "b", "segmentation": gt["annotations"][1]["segmentation"], "score": 0.5},
    ]
    r = A.evaluate_a2d(gt, preds, progress=False).to_dict()
    assert r["per_sample"][0]["iou"] == float(A.epsilon_iou([64], [96])[0])
    assert r["overall_iou"] == (64 + 200) / (96 + 200)
    assert r["P@0.6"] == 1.0 and r["P@0.7"] == 0.5  # 2/3 > 0.6 but not > 0.7


def test_tie_rule_in_evaluation():
    gt, preds = _two_sample_case()
    preds[1]["score"] = 0.9  # tie with the correct mask: the later (empty) one wins
    r = A.evaluate_a2d(gt, preds, progress=False).to_dict()
    assert r["per_sample"][0]["intersection"] == 0


def test_errors_name_the_bad_input():
    gt, preds = _two_sample_case()
    with pytest.raises(DatasetFormatError, match="'b'"):
        A.evaluate_a2d(gt, preds[:2], progress=False)
    with pytest.raises(DatasetFormatError, match="'zzz'.*not in the ground truth"):
        A.evaluate_a2d(gt, preds + [dict(preds[0], image_id="zzz")], progress=False)
    small = dict(preds[0], segmentation=rle(np.ones((5, 5))), score=2.0)
    with pytest.raises(DatasetFormatError, match="image 'a' is 5x5"):
        A.evaluate_a2d(gt, preds + [small], progress=False)
    with pytest.raises(DatasetFormatError, match="empty"):
        A.evaluate_a2d(gt, [], progress=False)
    bad = dict(gt, annotations=gt["annotations"][:1])
    with pytest.raises(DatasetFormatError, match="image 'b' has 0 annotations"):
        A.evaluate_a2d(bad, preds, progress=False)
