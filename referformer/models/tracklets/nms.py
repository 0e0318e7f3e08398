"""Tracklet-NMS (Liang et al. 2021, section 3.1): tracklet-IoU, tracklet scores, greedy suppression.

A *tracklet* is one mask per frame of a video: bool ``[T, H, W]``; ``P`` of them are ``[P, T, H, W]``.

* tracklet-IoU(p, q) = ``sum_t |M_p^t ∩ M_q^t| / sum_t |M_p^t ∪ M_q^t|`` (one ratio of sums over the
  whole video, not a mean of per-frame IoUs); 0 where the union is empty.
* tracklet score = the candidate's confidence (F_Seg's score on its key frame) x the mean over **all**
  ``T`` frames of the propagation probability, where the propagation probability of a frame is the
  mean foreground probability F_Prop gave the tracklet's own pixels at that frame (0 when its mask is
  empty there, so a tracklet the propagator lost is penalised for every frame it is missing).
* NMS: standard greedy suppression in decreasing score (ties: the lower index first).

Pure tensor code. Intersections are counted with a matrix product of the flattened masks in chunks
of pixels (float32 counts are exact within a chunk and summed in float64), so the memory is
``O(P * chunk)`` beyond the masks themselves, whatever ``T x H x W``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PIXEL_CHUNK", "frame_probabilities", "tracklet_iou", "tracklet_nms", "tracklet_scores"]

PIXEL_CHUNK = 1 << 20  # pixels per chunk of the intersection product (counts < 2**24 stay exact in float32)


def tracklet_iou(a: Tensor, b: Tensor, chunk: int = PIXEL_CHUNK) -> Tensor:
    """Tracklet-IoU of every pair: ``a`` bool ``[P, T, H, W]``, ``b`` bool ``[Q, T, H, W]`` -> float64
    ``[P, Q]`` (``sum_t |A ∩ B| / sum_t |A ∪ B|``, 0 where the union is empty)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"tracklets must cover the same frames: {list(a.shape[1:])} vs {list(b.shape[1:])}")
    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter = torch.zeros((len(a), len(b)), dtype=torch.float64, device=a.device)
    for start in range(0, fa.shape[1], chunk):
        ca = fa[:, start:start + chunk].to(torch.float32)
        cb = fb[:, start:start + chunk].to(torch.float32)
        inter += (ca @ cb.T).to(torch.float64)
    area_a = fa.sum(1, dtype=torch.float64)
    area_b = fb.sum(1, dtype=torch.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def frame_probabilities(masks: Tensor, probs: Tensor) -> Tensor:
    """Propagation probability of each tracklet at each frame: ``masks`` bool ``[P, T, H, W]``, ``probs``
    float ``[P, T, H, W]`` (F_Prop's foreground probability of the tracklet's object) -> float32
    ``[P, T]``: the mean of ``probs`` over the tracklet's own pixels, 0 where its mask is empty."""
    weights = masks.to(torch.float32)
    area = weights.flatten(2).sum(-1)
    total = (probs.to(torch.float32) * weights).flatten(2).sum(-1)
    return torch.where(area > 0, total / area.clamp(min=1), torch.zeros_like(area))


def tracklet_scores(confidences: Tensor, probs: Tensor) -> Tensor:
    """Tracklet scores: ``confidences`` ``[P]`` (F_Seg's, in [0, 1]) x the mean of ``probs`` ``[P, T]``
    (:func:`frame_probabilities`) over all ``T`` frames -> ``[P]``."""
    if probs.ndim != 2 or confidences.shape != probs.shape[:1]:
        raise ValueError(f"expected confidences [P] and probs [P, T], got {list(confidences.shape)} and "
                         f"{list(probs.shape)}")
    return confidences.to(probs.dtype) * probs.mean(dim=1)


def tracklet_nms(masks: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None) -> Tensor:
    """Greedy NMS over tracklets: ``masks`` bool ``[P, T, H, W]``, ``scores`` ``[P]`` -> int64 indices of
    the kept tracklets (at most ``max_keep``), by decreasing score (ties: lower index first).

    A tracklet is kept when its tracklet-IoU with every tracklet kept before it is at most
    ``iou_threshold``; suppressed ones suppress nothing."""
    if len(masks) != len(scores):
        raise ValueError(f"{len(masks)} tracklets but {len(scores)} scores")
    if len(scores) == 0 or max_keep == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = tracklet_iou(masks, masks).cpu()
    kept: list[int] = []
    for index in order.tolist():
        if all(iou[index, k] <= iou_threshold for k in kept):
            kept.append(index)
            if max_keep is not None and len(kept) == max_keep:
                break
    return torch.tensor(kept, dtype=torch.long, device=scores.device)
