"""Box utilities for the training losses.

Boxes are ``cx, cy, w, h`` normalised to [0, 1] (the format of ``pred_boxes`` and of the dataset
targets) unless a name says ``xyxy``. The pairwise IoU/GIoU come from torchvision, which computes
exactly what the original ``util/box_ops.py`` (DETR) computes, minus its validity assert.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert
from torchvision.ops import generalized_box_iou as _pairwise_giou

__all__ = ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "generalized_box_iou", "paired_generalized_box_iou"]


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` cx, cy, w, h -> ``[..., 4]`` x1, y1, x2, y2 (same units)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` x1, y1, x2, y2 -> ``[..., 4]`` cx, cy, w, h (same units)."""
    return box_convert(boxes, "xyxy", "cxcywh")


def generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes -> ``[N, M]`` in [-1, 1].

    Degenerate (zero-area) boxes are allowed: the original dataset gives invisible frames the box
    ``[0, 0, 0, 0]`` and still feeds it to the box cost and loss.
    """
    return _pairwise_giou(boxes1_xyxy, boxes2_xyxy)


def paired_generalized_box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """GIoU of corresponding rows of two ``[N, 4]`` xyxy box sets -> ``[N]``.

    Computed, like the original criterion, as the diagonal of the pairwise matrix (N is the number
    of matched frames in a batch, a few dozen), so the values are bit-identical to it.
    """
    return torch.diag(_pairwise_giou(boxes1_xyxy, boxes2_xyxy))
