"""Tracklet-NMS of the top-down system: tracklet-IoU, tracklet scores and greedy suppression on
hand-made masks with hand-computed answers (referformer.models.tracklets.nms)."""

from __future__ import annotations

import torch

from referformer.models.tracklets import frame_probabilities, tracklet_iou, tracklet_nms, tracklet_scores


def _tracklet(boxes: list[tuple[int, int, int, int] | None], size: int = 4) -> torch.Tensor:
    """bool [T, size, size]: per frame the box (y0, x0, y1, x1), exclusive ends, or nothing (None)."""
    out = torch.zeros((len(boxes), size, size), dtype=torch.bool)
    for t, box in enumerate(boxes):
        if box is not None:
            y0, x0, y1, x1 = box
            out[t, y0:y1, x0:x1] = True
    return out


def test_tracklet_iou_is_a_ratio_of_sums_over_frames() -> None:
    # A: frame 0 rows 0-1 x cols 0-1 (4 px), frame 1 the same (4 px)
    # B: frame 0 rows 0-1 x cols 1-2 (4 px; 2 shared with A), frame 1 empty
    # C: empty at both frames
    a = _tracklet([(0, 0, 2, 2), (0, 0, 2, 2)])
    b = _tracklet([(0, 1, 2, 3), None])
    c = _tracklet([None, None])
    iou = tracklet_iou(torch.stack([a, b, c]), torch.stack([a, b, c]))
    # A vs B: intersections 2 + 0 = 2; unions (4 + 4 - 2) + (4 + 0 - 0) = 6 + 4 = 10 -> 0.2
    # (a mean of per-frame IoUs would be (2/6 + 0) / 2 = 0.1667: not what the paper defines)
    assert abs(float(iou[0, 1]) - 0.2) < 1e-12 and abs(float(iou[1, 0]) - 0.2) < 1e-12
    assert float(iou[0, 0]) == 1.0 and float(iou[1, 1]) == 1.0
    # C has an empty union with itself and an empty intersection with the others: 0 everywhere
    assert iou[2].tolist() == [0.0, 0.0, 0.0] and iou[:, 2].tolist() == [0.0, 0.0, 0.0]
    # chunking the pixels changes nothing (8 pixels per chunk over 2 x 16 pixels)
    assert torch.equal(tracklet_iou(torch.stack([a, b, c]), torch.stack([a, b, c]), chunk=8), iou)


def test_tracklet_scores_are_confidence_times_mean_probability_over_all_frames() -> None:
    # tracklet 0: mask of 2 px at frame 0 with probabilities 0.8 and 0.6 -> 0.7; frame 1 empty -> 0;
    # frame 2 one px with 0.9 -> 0.9. Mean over all 3 frames: (0.7 + 0 + 0.9) / 3 = 0.5333...
    masks = torch.zeros((1, 3, 2, 2), dtype=torch.bool)
    probs = torch.zeros((1, 3, 2, 2))
    masks[0, 0, 0, :] = True
    probs[0, 0, 0] = torch.tensor([0.8, 0.6])
    probs[0, 0, 1] = 0.99  # outside the mask: ignored
    probs[0, 1] = 0.5  # empty mask: the frame counts as 0 whatever the probabilities
    masks[0, 2, 1, 1] = True
    probs[0, 2, 1, 1] = 0.9
    per_frame = frame_probabilities(masks, probs)
    assert torch.allclose(per_frame, torch.tensor([[0.7, 0.0, 0.9]]))
    # confidence 0.5 x 0.5333 = 0.2667
    score = tracklet_scores(torch.tensor([0.5]), per_frame)
    assert abs(float(score[0]) - 0.5 * 1.6 / 3) < 1e-6


def test_nms_suppresses_overlapping_tracklets_and_orders_by_score() -> None:
    # 0: rows 0-2 x cols 0-3 (12 px) at both frames; 1: rows 0-3 x cols 0-3 (16 px) at both frames
    # -> IoU = (12 + 12) / (16 + 16) = 0.75; 2: rows 0-3 x col 0 at frame 0 only (4 px; inside both)
    # IoU(0, 2) = 3 / (24 + 4 - 3) = 3 / 25 = 0.12, IoU(1, 2) = 4 / 32 = 0.125
    t0 = _tracklet([(0, 0, 3, 4), (0, 0, 3, 4)])
    t1 = _tracklet([(0, 0, 4, 4), (0, 0, 4, 4)])
    t2 = _tracklet([(0, 0, 4, 1), None])
    masks = torch.stack([t0, t1, t2])
    iou = tracklet_iou(masks, masks)
    assert abs(float(iou[0, 1]) - 0.75) < 1e-12 and abs(float(iou[0, 2]) - 0.12) < 1e-12
    assert abs(float(iou[1, 2]) - 0.125) < 1e-12
    # 1 scores highest: it suppresses 0 (0.75 > 0.5) but not 2 (0.125)
    assert tracklet_nms(masks, torch.tensor([0.8, 0.9, 0.1]), 0.5).tolist() == [1, 2]
    # 0 highest: 1 suppressed (0.75), 2 kept (0.12)
    assert tracklet_nms(masks, torch.tensor([0.9, 0.8, 0.1]), 0.5).tolist() == [0, 2]
    # a threshold above 0.75 keeps all three, by decreasing score
    assert tracklet_nms(masks, torch.tensor([0.5, 0.9, 0.7]), 0.8).tolist() == [1, 2, 0]
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    assert tracklet_nms(masks, torch.tensor([0.9, 0.8, 0.1]), 0.75).tolist() == [0, 1, 2]
    # ties go to the lower index: 0 before 1, and 1 is then suppressed
    assert tracklet_nms(masks, torch.tensor([0.5, 0.5, 0.1]), 0.5).tolist() == [0, 2]
    # no tracklet: nothing kept
    assert tracklet_nms(masks[:0], torch.zeros(0), 0.5).tolist() == []


def test_more_than_p_candidates_keeps_exactly_p_with_the_highest_scores() -> None:
    # 12 disjoint one-pixel tracklets on a 4 x 4 frame (pixel i at frame 0): no IoU at all, so NMS
    # alone keeps all 12; max_keep = 10 keeps the 10 best, by decreasing score
    masks = torch.zeros((12, 1, 4, 4), dtype=torch.bool)
    for i in range(12):
        masks[i, 0, i // 4, i % 4] = True
    scores = torch.tensor([0.30, 0.95, 0.10, 0.50, 0.70, 0.05, 0.60, 0.90, 0.20, 0.80, 0.40, 0.85])
    kept = tracklet_nms(masks, scores, 0.5, max_keep=10)
    assert len(kept) == 10
    assert kept.tolist() == [1, 7, 11, 9, 4, 6, 3, 10, 0, 8]  # 0.95, 0.90, 0.85, ... 0.20; 0.10 and 0.05 out
    assert set(range(12)) - set(kept.tolist()) == {2, 5}
