"""RefCOCO / RefCOCO+ / RefCOCOg: REC precision@0.5 (box IoU) and RIS overall IoU.

``../shared/reference/METRICS.md`` states only that ReferFormer prints "the same P@K / IoU
functions (box and mask)" as A2D for RefCOCO validation. The mask path is therefore exactly
:mod:`referformer.evaluation.a2d` (best-scoring prediction per sentence, float32 epsilon IoU,
``ΣI / ΣU``). For boxes we apply the same rules to box areas (continuous ``xyxy`` coordinates, no
``+1``; IoU with the same float32 epsilon; strictly greater than the threshold). That box
convention is **not** pinned by the reference material, so ``referformer evaluate --protocol
refcoco`` is deferred until the original's result format and box code are confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from referformer.evaluation.a2d import epsilon_iou, overall_iou, precision_at_k


def box_intersection_union(
    pred_xyxy: np.ndarray, gt_xyxy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Areas ``I`` and ``U`` of paired boxes ``[N, 4]`` (absolute ``x1, y1, x2, y2``) -> ``[N]``.

    Computed in float32 torch arithmetic like the rest of the original's IoU code.
    """
    pred = torch.as_tensor(np.asarray(pred_xyxy, dtype=np.float64), dtype=torch.float32).reshape(
        -1, 4
    )
    gt = torch.as_tensor(np.asarray(gt_xyxy, dtype=np.float64), dtype=torch.float32).reshape(-1, 4)
    top_left = torch.maximum(pred[:, :2], gt[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], gt[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = area_pred + area_gt - inter
    return inter.double().numpy(), union.double().numpy()


def rec_precision(
    pred_xyxy: np.ndarray, gt_xyxy: np.ndarray, thresholds: Sequence[float] = (0.5,)
) -> dict[float, float]:
    """REC precision@K: fraction of sentences whose (best) box has IoU > K with the GT box.

    ``pred_xyxy`` / ``gt_xyxy``: ``[N, 4]`` absolute pixel boxes, one per sentence.
    """
    inter, union = box_intersection_union(pred_xyxy, gt_xyxy)
    return precision_at_k(epsilon_iou(inter, union), thresholds)


def ris_overall_iou(intersections: Sequence[int], unions: Sequence[int]) -> float:
    """RIS overall IoU ``ΣI / ΣU`` of per-sentence mask pixel counts (1.0 if all unions are 0)."""
    return overall_iou(intersections, unions)
