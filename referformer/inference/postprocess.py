"""Post-processing of the original ``inference_ytvos.py``: one query per video, masks at the original size.

* scores: sigmoid of the class logits, averaged over frames, max over classes -> [Q];
* the argmax query is used for every frame;
* its stride-4 mask logits are upsampled bilinearly (align_corners=False) straight to the
  original frame size and thresholded: ``sigmoid > 0.5`` (equivalently logit > 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from referformer.models.prediction import ClipPrediction


def query_scores(pred_logits: Tensor) -> Tensor:
    """pred_logits: [T, Q, K] -> per-query score [Q] (mean over frames of sigmoid, max over classes)."""
    return pred_logits.sigmoid().mean(0).max(-1).values


def select_query(pred_logits: Tensor) -> tuple[int, Tensor]:
    """pred_logits: [T, Q, K] -> (index of the best query, scores [Q])."""
    scores = query_scores(pred_logits)
    return int(scores.argmax(-1)), scores


def upsample_mask_logits(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """mask_logits: [T, h, w] -> [T, H, W] bilinear (align_corners=False) to ``size`` = (H, W) pixels."""
    return F.interpolate(mask_logits[None], size=tuple(int(s) for s in size), mode="bilinear",
                         align_corners=False)[0]


def cxcywh_to_xyxy_pixels(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """boxes: [..., 4] normalised (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1) in pixels of ``size`` = (H, W)."""
    cx, cy, w, h = boxes.unbind(-1)
    height, width = size
    xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    return xyxy * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)


def postprocess_clip(pred_logits: Tensor, pred_boxes: Tensor, pred_masks: Tensor, orig_size: tuple[int, int],
                     reference_points: Tensor | None = None, threshold: float = 0.5) -> ClipPrediction:
    """One clip, one sentence. pred_logits [T, Q, K]; pred_boxes [T, Q, 4]; pred_masks [T, Q, h, w]
    (mask logits at stride 4); orig_size (H, W) pixels; reference_points [T, Q, 2] (optional)."""
    query, scores = select_query(pred_logits)
    t = pred_logits.shape[0]
    logits = pred_logits[:, query]
    mask_logits = upsample_mask_logits(pred_masks[torch.arange(t), query], orig_size)
    masks = mask_logits.sigmoid() > threshold
    boxes = pred_boxes[:, query]
    return ClipPrediction(
        masks=masks, mask_logits=mask_logits, boxes=cxcywh_to_xyxy_pixels(boxes, orig_size),
        scores=logits.sigmoid().max(-1).values, query_scores=scores, query=query, logits=logits,
        boxes_cxcywh=boxes, reference_points=None if reference_points is None else reference_points[:, query])
