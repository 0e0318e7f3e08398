"""RefVOS training loss: pixel-wise cross-entropy over background / foreground.

As torchvision's segmentation reference (which the RefVOS code builds on), the loss is
``F.cross_entropy`` averaged over every labelled pixel of the batch. Labels are built from the
dataset targets (``DATASETS.md`` section 0): ``masks`` ``[T_i, h_i, w_i]`` at the unpadded input size,
optional ``valid_indices`` (A2D / JHMDB: which frames of the clip are annotated) and ``valid``.
Ignored: the padding of the batch (pixels beyond ``h_i, w_i``, frames beyond the clip), frames that
are not annotated and, with ``visible_frames_only``, frames where the object is absent.

Same interface as :class:`~referformer.engine.criterion.SetCriterion`: ``forward(outputs, targets)``
returns unweighted terms (here only ``loss_ce``), ``weight_dict`` and ``total`` weigh them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from referformer.engine.criterion import weighted_total

__all__ = ["IGNORE_INDEX", "RefVOSCriterion", "segmentation_labels"]

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


def segmentation_labels(
    targets: list[dict[str, Any]], num_frames: int, size: tuple[int, int], visible_frames_only: bool = False
) -> torch.Tensor:
    """Per-pixel labels ``[B, T, H, W]`` int64: 1 = referred object, 0 = background, ``IGNORE_INDEX`` elsewhere.

    Args:
        targets: per-clip dicts with ``masks`` ``[T_i, h_i, w_i]`` (bool / 0-1, input resolution,
            top-left aligned in the padded frame), optional ``valid_indices`` ``[T_i]`` (frame
            positions of the masks inside the clip; default ``0 .. T_i - 1``) and ``valid`` ``[T_i]``.
        num_frames: T of the predictions; size: padded (H, W) of the predictions, in pixels.
        visible_frames_only: also ignore frames whose ``valid`` is 0 (object absent).
    """
    height, width = size
    device = targets[0]["masks"].device
    labels = torch.full((len(targets), num_frames, height, width), IGNORE_INDEX, dtype=torch.long, device=device)
    for index, target in enumerate(targets):
        masks = target["masks"]
        h, w = masks.shape[-2:]
        if h > height or w > width:
            raise ValueError(f"target {index}: masks of size {h}x{w} exceed the predictions' size {height}x{width}")
        if "valid_indices" in target:
            frames = torch.as_tensor(target["valid_indices"], device=device).long().reshape(-1)
        else:
            frames = torch.arange(masks.shape[0], device=device)
        if len(frames) != masks.shape[0] or (len(frames) and int(frames.max()) >= num_frames):
            raise ValueError(f"target {index}: {masks.shape[0]} masks for frames {frames.tolist()} "
                             f"do not fit a clip of {num_frames} frames")
        keep = torch.ones(len(frames), dtype=torch.bool, device=device)
        if visible_frames_only and "valid" in target:
            keep = torch.as_tensor(target["valid"], device=device).reshape(-1).bool()
        labels[index, frames[keep], :h, :w] = masks[keep].long()
    return labels


class RefVOSCriterion(nn.Module):
    """Cross-entropy over fg/bg on the annotated frames, padding ignored.

    Args:
        weight: coefficient of ``loss_ce`` in :meth:`total`.
        class_weights: optional (background, foreground) weights of ``F.cross_entropy``
            (None = unweighted, as torchvision's reference).
        visible_frames_only: ignore annotated frames where the object is absent (``valid == 0``).
            Off by default: such frames are all-background ground truth and are trained on.
    """

    def __init__(self, weight: float = 1.0, class_weights: tuple[float, float] | None = None,
                 visible_frames_only: bool = False) -> None:
        super().__init__()
        self.weight_dict = {"loss_ce": float(weight)}
        self.visible_frames_only = visible_frames_only
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights),
                             persistent=False)

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms returned by :meth:`forward`."""
        return weighted_total(losses, self.weight_dict)

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """outputs: ``seg_logits`` ``[B, T, 2, H, W]`` (padded input size); targets: see
        :func:`segmentation_labels`. Returns ``{"loss_ce": scalar}`` (mean over labelled pixels)."""
        logits = outputs["seg_logits"]
        _, t, _, h, w = logits.shape
        labels = segmentation_labels(targets, t, (h, w), self.visible_frames_only)
        if not bool((labels != IGNORE_INDEX).any()):
            return {"loss_ce": logits.sum() * 0.0}  # nothing labelled: a zero that keeps the graph
        weight = None if self.class_weights is None else self.class_weights.to(logits.device, torch.float32)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1), weight=weight,
                               ignore_index=IGNORE_INDEX)
        return {"loss_ce": loss}
