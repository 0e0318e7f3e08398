"""Hand-computed checks of the loss/cost primitives, the box helpers and the target preparation."""

from __future__ import annotations

import math

import pytest
import torch

from referformer.engine.box_ops import box_cxcywh_to_xyxy, generalized_box_iou, paired_generalized_box_iou
from referformer.engine.losses import (
    dice_loss,
    focal_class_cost,
    pairwise_dice_coefficient,
    pairwise_sigmoid_focal_cost,
    sigmoid_focal_loss,
)
from referformer.engine.targets import downsample_target_masks, select_annotated_frames

LN2 = math.log(2.0)
# Focal terms at p = sigmoid(0) = 0.5: alpha_t * (1 - p_t)^2 * ln 2.
FOCAL_POS_AT_HALF = 0.25 * 0.25 * LN2
FOCAL_NEG_AT_HALF = 0.75 * 0.25 * LN2


def test_sigmoid_focal_loss_mean_over_row_sum_over_rows_divided_by_num_boxes():
    logits = torch.zeros(2, 4)
    targets = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    expected = ((FOCAL_POS_AT_HALF + 3 * FOCAL_NEG_AT_HALF) / 4 + (2 * FOCAL_POS_AT_HALF + 2 * FOCAL_NEG_AT_HALF) / 4) / 3
    assert sigmoid_focal_loss(logits, targets, num_boxes=3) == pytest.approx(expected, rel=1e-6)


def test_sigmoid_focal_loss_at_confident_logit():
    # p = 0.9 for a positive: 0.25 * 0.1^2 * -ln(0.9)
    logit = math.log(0.9 / 0.1)
    value = sigmoid_focal_loss(torch.tensor([[logit]]), torch.tensor([[1.0]]), num_boxes=1)
    assert value == pytest.approx(0.25 * 0.01 * -math.log(0.9), rel=1e-5)


def test_dice_loss_plus_one_smoothing():
    logits = torch.zeros(1, 4)  # p = 0.5 everywhere
    targets = torch.tensor([[1.0, 1, 0, 0]])
    # numerator 2 * 1 = 2, denominator 2 + 2 = 4 -> 1 - 3 / 5
    assert dice_loss(logits, targets, num_boxes=1) == pytest.approx(0.4)


def test_dice_loss_empty_target_mask():
    logits = torch.zeros(1, 4)
    # numerator 0, denominator 2 -> 1 - 1 / 3; empty masks are finite, not NaN
    assert dice_loss(logits, torch.zeros(1, 4), num_boxes=2) == pytest.approx((2 / 3) / 2)


def test_pairwise_costs_match_hand_values():
    logits = torch.zeros(2, 1, 2, 2)
    logits[1] = 20.0  # p ~ 1
    targets = torch.tensor([[[[1.0, 0], [0, 0]]]])
    focal = pairwise_sigmoid_focal_cost(logits, targets)
    assert focal.shape == (2, 1)
    assert focal[0, 0] == pytest.approx((FOCAL_POS_AT_HALF + 3 * FOCAL_NEG_AT_HALF) / 4, rel=1e-6)
    dice = pairwise_dice_coefficient(logits, targets)
    assert dice[0, 0] == pytest.approx((2 * 0.5 + 1) / (2 + 1 + 1))
    assert dice[1, 0] == pytest.approx((2 * 1 + 1) / (4 + 1 + 1), rel=1e-6)


def test_focal_class_cost():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = 0.5, 0.75
    cost = focal_class_cost(logits, torch.tensor([1, 0]))
    p = 0.75
    expected_1 = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p)
    assert cost.shape == (1, 2)
    assert cost[0, 0] == pytest.approx(expected_1, rel=1e-5)
    assert cost[0, 1] == pytest.approx(FOCAL_POS_AT_HALF - FOCAL_NEG_AT_HALF, rel=1e-5)


EPS = 1e-6  # the original util/box_ops.py smoothing


def _original_giou(inter: float, union: float, hull: float) -> float:
    """The original's GIoU from its three areas: ``(i + eps)/(u + eps) - ((h - u) + eps)/(h + eps)``."""
    return (inter + EPS) / (union + EPS) - ((hull - union) + EPS) / (hull + EPS)


def test_giou_with_zero_box_of_invisible_frame():
    pred = box_cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, 0.2, 0.2]]))
    zero = torch.zeros(1, 4)
    assert pred.tolist() == [[pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.6), pytest.approx(0.6)]]
    # inter 0, union 0.04, enclosing box (0,0)-(0.6,0.6): DETR would give 0 - (0.36 - 0.04) / 0.36;
    # the original's epsilons give 1e-6 / (0.04 + 1e-6) - (0.32 + 1e-6) / (0.36 + 1e-6)
    vs_zero = _original_giou(0.0, 0.04, 0.36)
    assert generalized_box_iou(pred, zero)[0, 0] == pytest.approx(vs_zero, rel=1e-5)
    assert generalized_box_iou(pred, zero)[0, 0] != pytest.approx(-0.32 / 0.36, rel=1e-5)  # not DETR's
    same = paired_generalized_box_iou(torch.cat([pred, pred]), torch.cat([pred, zero]))
    # identical boxes: iou 1, enclosing term eps / (0.04 + eps)
    assert same.tolist() == [pytest.approx(_original_giou(0.04, 0.04, 0.04), rel=1e-6),
                             pytest.approx(vs_zero, rel=1e-5)]


def test_giou_epsilons_by_hand():
    """Hand-computed GIoU of the original util/box_ops.py on boxes that expose each epsilon."""
    # the example: a predicted box of side 0.0067 centred at (0.0067, 0.0067) vs the zero box
    side = 0.0067
    tiny = box_cxcywh_to_xyxy(torch.tensor([[side, side, side, side]], dtype=torch.float64))
    zero = torch.zeros(1, 4, dtype=torch.float64)
    hull = (1.5 * side) ** 2
    expected = _original_giou(0.0, side * side, hull)
    assert 1 - generalized_box_iou(tiny, zero)[0, 0].item() == pytest.approx(1 - expected, rel=1e-9)
    assert 1 - expected == pytest.approx(1.538, abs=5e-4)  # DETR's formula: 2 - side^2 / hull = 1.556
    assert 2 - side * side / hull == pytest.approx(1.556, abs=5e-4)
    # two zero boxes: iou = eps / eps = 1, enclosing term eps / eps = 1 -> GIoU 0 (not NaN)
    assert generalized_box_iou(zero, zero)[0, 0].item() == 0.0
    # overlapping boxes, xyxy: a = (0, 0)-(2, 1), b = (1, 0)-(3, 2): inter 1, union 2 + 4 - 1 = 5, hull 3 * 2
    a = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0]], dtype=torch.float64)
    giou = generalized_box_iou(a, b)[0, 0].item()
    assert giou == pytest.approx(_original_giou(1.0, 5.0, 6.0), rel=1e-12)
    assert giou == pytest.approx((1 + EPS) / (5 + EPS) - (1 + EPS) / (6 + EPS), rel=1e-12)
    # pairwise shape and symmetry
    pair = generalized_box_iou(torch.cat([a, b, tiny]), torch.cat([b, zero]))
    assert pair.shape == (3, 2) and pair[0, 0].item() == pytest.approx(giou, rel=1e-12)
    assert generalized_box_iou(b, a)[0, 0].item() == pytest.approx(giou, rel=1e-12)


def test_downsample_target_masks_pads_then_takes_every_4th_pixel_from_2():
    masks = torch.zeros(1, 6, 7, dtype=torch.bool)
    masks[0, 2, 6] = True  # row 2, col 6 -> sampled position (0, 1)
    masks[0, 3, 3] = True  # not on the sampling grid
    out = downsample_target_masks([{"masks": masks}], mask_size=(2, 2))
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="exceed"):
        downsample_target_masks([{"masks": torch.zeros(1, 9, 8)}], mask_size=(2, 2))


def test_select_annotated_frames_picks_valid_indices():
    logits = torch.arange(2 * 3 * 2 * 1, dtype=torch.float).view(2, 3, 2, 1)
    outputs = {
        "pred_logits": logits,
        "pred_boxes": torch.rand(2, 3, 2, 4),
        "pred_masks": torch.rand(2, 3, 2, 5, 5),
        "aux_outputs": [{"pred_logits": logits + 100, "pred_boxes": torch.rand(2, 3, 2, 4), "pred_masks": torch.rand(2, 3, 2, 5, 5)}],
    }
    targets = [{"valid": torch.ones(1), "valid_indices": torch.tensor([2])}, {"valid": torch.ones(1), "valid_indices": torch.tensor([0])}]
    selected = select_annotated_frames(outputs, targets)
    assert torch.equal(selected["pred_logits"][0, 0], logits[0, 2])
    assert torch.equal(selected["pred_logits"][1, 0], logits[1, 0])
    assert torch.equal(selected["pred_masks"][0, 0], outputs["pred_masks"][0, 2])
    assert torch.equal(selected["aux_outputs"][0]["pred_logits"][1, 0], logits[1, 0] + 100)
    assert select_annotated_frames(outputs, [{"valid": torch.ones(3)}] * 2) is outputs
    with pytest.raises(ValueError, match="valid_indices"):
        select_annotated_frames(outputs, [{"valid": torch.ones(1)}] * 2)
