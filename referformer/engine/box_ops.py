"""Box utilities for the training losses (the original ``util/box_ops.py``).

Boxes are ``cx, cy, w, h`` normalised to [0, 1] (the format of ``pred_boxes`` and of the dataset
targets) unless a name says ``xyxy``.

The format conversions and the box area come from torchvision, whose formulas are the original's
operation for operation. The IoU/GIoU do **not**: the original ``util/box_ops.py`` is not DETR's
(nor torchvision's). It adds ``1e-6`` to the IoU's numerator and denominator and to both sides
of the GIoU's enclosing-area term::

    iou  = (inter + 1e-6) / (union + 1e-6)
    giou = iou - ((hull - union) + 1e-6) / (hull + 1e-6)

That matters against the zero box ``[0, 0, 0, 0]`` that the datasets give a frame where the object
is invisible (the box cost and loss still see it): a prediction of side 0.0067 there has
``1 - GIoU`` = 1.538 with the epsilons and 1.556 without. So the GIoU below is written out. The
original's ``assert (boxes[:, 2:] >= boxes[:, :2]).all()`` is left out (a sigmoid box head cannot
produce an inverted box; a degenerate zero box is fine).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_area, box_convert

__all__ = [
    "GIOU_EPS",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_iou",
    "generalized_box_iou",
    "paired_generalized_box_iou",
]

# the original's smoothing constant in box_iou and generalized_box_iou
GIOU_EPS = 1e-6


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` cx, cy, w, h -> ``[..., 4]`` x1, y1, x2, y2 (same units).

    torchvision computes ``cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h``: the original.
    """
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` x1, y1, x2, y2 -> ``[..., 4]`` cx, cy, w, h (same units).

    torchvision computes ``(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1``: the original.
    """
    return box_convert(boxes, "xyxy", "cxcywh")


def box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's smoothed pairwise IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes.

    Returns:
        ``iou`` ``[N, M]`` = ``(inter + 1e-6) / (union + 1e-6)`` (1 for two zero boxes, not NaN)
        and ``union`` ``[N, M]`` (area units of the boxes).
    """
    area1 = box_area(boxes1_xyxy)
    area2 = box_area(boxes2_xyxy)
    lt = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[:, :2])  # [N, M, 2]
    rb = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[:, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area1[:, None] + area2 - inter
    iou = (inter + GIOU_EPS) / (union + GIOU_EPS)
    return iou, union


def generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes -> ``[N, M]`` in [-1, 1].

    The original's formula with its epsilons (module docstring), in its order of operations:
    ``iou - ((hull - union) + 1e-6) / (hull + 1e-6)``. So two identical boxes of area ``a`` give
    ``1 - 1e-6 / (a + 1e-6)`` (not exactly 1), and two zero boxes give 0 (not 1, and not NaN).
    Degenerate (zero-area) boxes are allowed: the original dataset gives invisible frames the box
    ``[0, 0, 0, 0]`` and still feeds it to the box cost and loss.
    """
    iou, union = box_iou(boxes1_xyxy, boxes2_xyxy)
    lt = torch.min(boxes1_xyxy[:, None, :2], boxes2_xyxy[:, :2])
    rb = torch.max(boxes1_xyxy[:, None, 2:], boxes2_xyxy[:, 2:])
    wh = (rb - lt).clamp(min=0)  # [N, M, 2]
    hull = wh[:, :, 0] * wh[:, :, 1]
    return iou - ((hull - union) + GIOU_EPS) / (hull + GIOU_EPS)


def paired_generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """GIoU of corresponding rows of two ``[N, 4]`` xyxy box sets -> ``[N]``.

    Computed, like the original criterion, as the diagonal of the pairwise matrix (N is the number
    of matched frames in a batch, a few dozen), so the values are bit-identical to it.
    """
    return torch.diag(generalized_box_iou(boxes1_xyxy, boxes2_xyxy))
