"""Hand-computed checks of the Hungarian matcher and of every term of the criterion."""

from __future__ import annotations

import math

import pytest
import torch

from referformer.engine.criterion import LossWeights, SetCriterion, weighted_total
from referformer.engine.matcher import HungarianMatcher, MatcherCosts

LN2 = math.log(2.0)
FOCAL_POS_AT_HALF = 0.25 * 0.25 * LN2
FOCAL_NEG_AT_HALF = 0.75 * 0.25 * LN2
TARGET_BOX = [0.25, 0.25, 0.5, 0.5]
FAR_BOX = [0.5, 0.5, 0.2, 0.2]
EPS = 1e-6  # the original util/box_ops.py GIoU smoothing
# see test_engine_losses.test_giou_with_zero_box_of_invisible_frame: inter 0, union 0.04, hull 0.36
GIOU_FAR_VS_ZERO = EPS / (0.04 + EPS) - (0.32 + EPS) / (0.36 + EPS)
# a box against itself (TARGET_BOX, area 0.25): iou 1, enclosing term eps / (0.25 + eps)
GIOU_TARGET_VS_ITSELF = 1 - EPS / (0.25 + EPS)


def make_clip(valid=(1, 0), labels=(0, 0), num_classes=1, matched_query=1):
    """One clip, T = 2, Q = 2, masks 2x2 at stride 4 (input 8x8), all logits 0 (p = 0.5).

    Query ``matched_query`` has the target box on frame 0 and FAR_BOX on frame 1; the other query has
    FAR_BOX on both frames, so the box costs decide the matching. Target mask: one sampled pixel on
    frame 0, nothing on frame 1 (empty mask).
    """
    num_frames, num_queries = 2, 2
    boxes = torch.tensor(FAR_BOX).repeat(1, num_frames, num_queries, 1)
    boxes[0, 0, matched_query] = torch.tensor(TARGET_BOX)
    outputs = {
        "pred_logits": torch.zeros(1, num_frames, num_queries, num_classes),
        "pred_boxes": boxes,
        "pred_masks": torch.zeros(1, num_frames, num_queries, 2, 2),
    }
    masks = torch.zeros(num_frames, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # sampled at (2, 2) only
    target_boxes = torch.zeros(num_frames, 4)
    target_boxes[0] = torch.tensor(TARGET_BOX)
    target = {
        "masks": masks,
        "boxes": target_boxes,
        "valid": torch.tensor(valid),
        "labels": torch.tensor(labels),
    }
    return outputs, target


def test_matcher_cost_matrix_by_hand():
    outputs, target = make_clip()
    costs = HungarianMatcher().cost_matrix(outputs, [target])[0]
    assert costs.shape == (2, 1)
    # class: frame 0 only (frame 1 invisible), p = 0.5
    cost_class = FOCAL_POS_AT_HALF - FOCAL_NEG_AT_HALF
    # box L1 averaged over both frames: matched query 0 on frame 0, |FAR_BOX - 0| = 1.4 on frame 1
    l1_far_vs_target = 0.25 + 0.25 + 0.3 + 0.3
    giou_far_vs_target = _giou(FAR_BOX, TARGET_BOX)
    # mask costs over the 8 pixels of both frames: 1 positive
    cost_mask = (FOCAL_POS_AT_HALF + 7 * FOCAL_NEG_AT_HALF) / 8
    cost_dice = -(2 * 0.5 + 1) / (4 + 1 + 1)
    shared = 2 * cost_class + 2 * cost_mask + 5 * cost_dice
    matched = shared + 5 * (0 + 1.4) / 2 + 2 * -(GIOU_TARGET_VS_ITSELF + GIOU_FAR_VS_ZERO) / 2
    other = shared + 5 * (l1_far_vs_target + 1.4) / 2 + 2 * -(giou_far_vs_target + GIOU_FAR_VS_ZERO) / 2
    assert costs[1, 0] == pytest.approx(matched, rel=1e-5)
    assert costs[0, 0] == pytest.approx(other, rel=1e-5)
    indices = HungarianMatcher()(outputs, [target])
    assert [(i.tolist(), j.tolist()) for i, j in indices] == [([1], [0])]


def test_matcher_respects_cost_weights_and_multiclass_labels():
    outputs, target = make_clip(valid=(1, 1), labels=(2, 2), num_classes=3, matched_query=0)
    outputs["pred_logits"][0, :, 1, 2] = 10.0  # query 1 confident about the target class
    class_only = HungarianMatcher(MatcherCosts(1, 0, 0, 0, 0))
    assert class_only(outputs, [target])[0][0].tolist() == [1]
    box_only = HungarianMatcher(MatcherCosts(0, 1, 0, 0, 0))
    assert box_only(outputs, [target])[0][0].tolist() == [0]
    with pytest.raises(ValueError):
        HungarianMatcher(MatcherCosts(0, 0, 0, 0, 0))


def test_criterion_every_term_by_hand():
    outputs, target = make_clip()
    criterion = SetCriterion(num_decoder_layers=1)
    losses = criterion(outputs, [target])
    num_boxes = 1  # one visible frame
    # 4 slots (2 frames x 2 queries), the matched query positive on frame 0 only
    assert losses["loss_ce"] == pytest.approx((FOCAL_POS_AT_HALF + 3 * FOCAL_NEG_AT_HALF) / num_boxes, rel=1e-6)
    # frame 0 exact, frame 1 (invisible) against the zero box, as in the original
    assert losses["loss_bbox"] == pytest.approx(1.4, rel=1e-6)
    assert losses["loss_giou"] == pytest.approx((1 - GIOU_TARGET_VS_ITSELF) + (1 - GIOU_FAR_VS_ZERO), rel=1e-5)
    assert losses["loss_mask"] == pytest.approx((FOCAL_POS_AT_HALF + 7 * FOCAL_NEG_AT_HALF) / 8, rel=1e-6)
    assert losses["loss_dice"] == pytest.approx(1 - 2 / 6, rel=1e-6)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"}

    visible_only = SetCriterion(num_decoder_layers=1, box_loss_visible_only=True)(outputs, [target])
    assert visible_only["loss_bbox"] == pytest.approx(0.0, abs=1e-7)
    # about 0; exactly: the original's epsilons make a perfect box cost eps / (area + eps) = 4e-6
    assert visible_only["loss_giou"] == pytest.approx(1 - GIOU_TARGET_VS_ITSELF, rel=0.05)
    assert visible_only["loss_dice"] == losses["loss_dice"]


def test_criterion_multiclass_positive_at_label():
    outputs, target = make_clip(valid=(1, 1), labels=(2, 1), num_classes=3)
    losses = SetCriterion(num_decoder_layers=1)(outputs, [target])
    # 2 frames x 2 queries x 3 classes = 12 terms, 2 positives; num_boxes = 2
    assert losses["loss_ce"] == pytest.approx((2 * FOCAL_POS_AT_HALF + 10 * FOCAL_NEG_AT_HALF) / 2, rel=1e-6)


def test_criterion_all_frames_invisible_and_empty_masks():
    outputs, target = make_clip(valid=(0, 0))
    target["masks"][:] = False
    target["boxes"][:] = 0
    losses = SetCriterion(num_decoder_layers=1)(outputs, [target])
    assert all(torch.isfinite(v) for v in losses.values())
    # num_boxes is clamped to 1; no positive slot
    assert losses["loss_ce"] == pytest.approx(4 * FOCAL_NEG_AT_HALF, rel=1e-6)
    assert losses["loss_mask"] == pytest.approx(FOCAL_NEG_AT_HALF, rel=1e-6)
    assert losses["loss_dice"] == pytest.approx(1 - 1 / 5, rel=1e-6)  # sum p = 4, sum t = 0


def test_criterion_aux_layers_weights_and_total():
    outputs, target = make_clip()
    aux = {k: v.clone() for k, v in outputs.items()}
    outputs["aux_outputs"] = [aux, aux, aux]
    criterion = SetCriterion()
    losses = criterion(outputs, [target])
    assert len(losses) == 20
    for layer in range(3):
        for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
            assert torch.equal(losses[f"{name}_{layer}"], losses[name])
    assert criterion.weight_dict["loss_dice_2"] == 5 and criterion.weight_dict["loss_ce_0"] == 2
    assert LossWeights().weight_dict(0) == {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 2, "loss_dice": 5}
    last = 2 * losses["loss_ce"] + 5 * losses["loss_bbox"] + 2 * losses["loss_giou"] + 2 * losses["loss_mask"] + 5 * losses["loss_dice"]
    assert criterion.total(losses) == pytest.approx(4 * last.item(), rel=1e-6)
    assert weighted_total({"loss_ce": torch.tensor(1.0), "other": torch.tensor(9.0)}, {"loss_ce": 2}) == 2


def test_criterion_batch_sums_clips_and_normalises_by_visible_frames():
    outputs_a, target_a = make_clip(valid=(1, 0))
    outputs_b, target_b = make_clip(valid=(1, 1), matched_query=0)
    target_b["boxes"][1] = torch.tensor(TARGET_BOX)
    batch = {k: torch.cat([outputs_a[k], outputs_b[k]]) for k in outputs_a}
    criterion = SetCriterion(num_decoder_layers=1)
    together = criterion(batch, [target_a, target_b])
    alone_a = criterion(outputs_a, [target_a])
    alone_b = criterion(outputs_b, [target_b])
    for name, value in together.items():  # alone: num_boxes 1 and 2; together: 3
        assert value.item() == pytest.approx(((alone_a[name] * 1 + alone_b[name] * 2) / 3).item(), rel=1e-5)


def test_criterion_a2d_single_annotated_frame():
    outputs, target = make_clip(valid=(1, 1))
    # A2D-style target: only frame 1 of the clip is annotated
    a2d_target = {k: v[1:] for k, v in target.items()}
    a2d_target["masks"] = target["masks"][:1]
    a2d_target["boxes"] = torch.tensor([TARGET_BOX])
    a2d_target["valid_indices"] = torch.tensor([1])
    outputs["pred_boxes"][0, 1] = outputs["pred_boxes"][0, 0]
    picked = {k: v[:, 1:] for k, v in outputs.items()}
    criterion = SetCriterion(num_decoder_layers=1)
    whole_clip = criterion(outputs, [a2d_target])
    one_frame = criterion(picked, [a2d_target])
    for name in whole_clip:
        assert torch.equal(whole_clip[name], one_frame[name])
    assert whole_clip["loss_bbox"] == pytest.approx(0.0, abs=1e-7)
    # 1 frame x 2 queries, one positive
    assert whole_clip["loss_ce"] == pytest.approx(FOCAL_POS_AT_HALF + FOCAL_NEG_AT_HALF, rel=1e-6)


def test_criterion_gradients_flow_to_matched_query_only_for_boxes():
    outputs, target = make_clip()
    outputs["pred_boxes"].requires_grad_(True)
    losses = SetCriterion(num_decoder_layers=1)(outputs, [target])
    losses["loss_bbox"].backward()
    grad = outputs["pred_boxes"].grad
    assert grad[0, :, 0].abs().sum() == 0 and grad[0, 1, 1].abs().sum() > 0


def _giou(box_a, box_b):
    def xyxy(b):
        return b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2

    ax1, ay1, ax2, ay2 = xyxy(box_a)
    bx1, by1, bx2, by2 = xyxy(box_b)
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    # the original util/box_ops.py (not DETR's): 1e-6 on both sides of both fractions
    return (inter + EPS) / (union + EPS) - ((hull - union) + EPS) / (hull + EPS)


def test_focal_alpha_reaches_loss_ce_only():
    """The original's --focal_alpha is passed to loss_ce only; loss_mask and the matcher use 0.25."""
    outputs, target = make_clip()
    default = SetCriterion(num_decoder_layers=1)
    other = SetCriterion(num_decoder_layers=1, focal_alpha=0.6)
    base, changed = default(outputs, [target]), other(outputs, [target])
    # loss_ce with alpha 0.6 at p = 0.5: 1 positive slot, 3 negative ones
    pos, neg = 0.6 * 0.25 * LN2, 0.4 * 0.25 * LN2
    assert changed["loss_ce"] == pytest.approx(pos + 3 * neg, rel=1e-6)
    assert changed["loss_ce"] != pytest.approx(base["loss_ce"].item(), rel=1e-3)
    for name in ("loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        assert torch.equal(changed[name], base[name]), name
    assert changed["loss_mask"] == pytest.approx((FOCAL_POS_AT_HALF + 7 * FOCAL_NEG_AT_HALF) / 8, rel=1e-6)
    # the matcher is not told about focal_alpha: same costs, same matching
    costs = other.matcher.cost_matrix(outputs, [target])[0]
    assert torch.equal(costs, default.matcher.cost_matrix(outputs, [target])[0])
    assert MatcherCosts().focal_alpha == 0.25 and MatcherCosts().focal_gamma == 2.0
