"""Training criterion of ReferFormer (original ``models/criterion.py`` ``SetCriterion``).

For the query sequence chosen by :class:`~referformer.engine.matcher.HungarianMatcher`:

* ``loss_ce``: sigmoid focal loss (``focal_alpha``, default 0.25 = the original ``--focal_alpha``;
  gamma 2) over **all** ``T x Q`` query slots and classes; the matched query is positive on the
  visible frames only (background elsewhere).
  Normalised as Deformable DETR: ``terms.mean(1).sum() / num_boxes * (T * Q)``, i.e. the sum of
  all terms divided by ``num_boxes``.
* ``loss_bbox`` (L1) and ``loss_giou`` (``1 - GIoU``): over the matched query's boxes on **all**
  T frames, summed and divided by ``num_boxes``. Invisible frames are compared with the dataset's
  zero box, as in the original; ``box_loss_visible_only=True`` restricts them to visible frames.
* ``loss_mask`` (focal) and ``loss_dice`` (+1 smoothing): one row per clip holding the matched
  query's masks of all T frames at the mask stride (targets subsampled, predictions not
  upsampled), focal averaged over the row; both summed over clips and divided by ``num_boxes``.
  The mask focal loss always uses alpha 0.25, gamma 2 (:data:`MASK_FOCAL_ALPHA`): the original
  calls ``sigmoid_focal_loss`` there with its default arguments, so ``--focal_alpha`` only reaches
  ``loss_ce`` (and the matcher's costs hard-code 0.25 too, see :mod:`referformer.engine.matcher`).

``num_boxes`` is the number of visible target frames of the batch, summed over processes
(``all_reduce``), divided by the world size and clamped to >= 1. Every term is repeated for each
entry of ``aux_outputs`` (earlier decoder layers, each matched on its own) with suffix ``_0``,
``_1``, ... ; the weights are ``ce 2, bbox 5, giou 2, mask 2, dice 5`` for every layer.

With the defaults every term, the weighted total and the matched queries equal the original's on
the reference cases of ``../shared/reference/training/criterion`` (tests/test_criterion_reference.py).
Our options, each off by default: ``box_loss_visible_only``, ``LossWeights.loss_align``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from referformer.engine import distributed
from referformer.engine.alignment import sentence_object_alignment_loss
from referformer.engine.box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou
from referformer.engine.losses import dice_loss, sigmoid_focal_loss
from referformer.engine.matcher import HungarianMatcher, Indices
from referformer.engine.targets import MASK_OUT_STRIDE, downsample_target_masks, select_annotated_frames

__all__ = ["LossWeights", "SetCriterion", "weighted_total", "MASK_FOCAL_ALPHA", "MASK_FOCAL_GAMMA"]

# focal parameters of loss_mask: the defaults of the original sigmoid_focal_loss, which its
# loss_masks calls without alpha/gamma, whatever --focal_alpha says
MASK_FOCAL_ALPHA = 0.25
MASK_FOCAL_GAMMA = 2.0

LOSS_NAMES = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")


@dataclass(frozen=True)
class LossWeights:
    """Loss coefficients (original ``--*_loss_coef`` defaults); the same for every decoder layer."""

    loss_ce: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    loss_mask: float = 2.0
    loss_dice: float = 5.0
    # our option (0 = the original): the sentence-object alignment term of engine.alignment, once per
    # batch (not per decoder layer); needs several sentences per clip
    loss_align: float = 0.0

    def weight_dict(self, num_aux_layers: int) -> dict[str, float]:
        """``{"loss_ce": 2, ..., "loss_ce_0": 2, ...}`` for the last layer and ``num_aux_layers`` earlier
        ones, plus ``loss_align`` when it is weighted."""
        base = {name: float(getattr(self, name)) for name in LOSS_NAMES}
        weights = dict(base)
        for layer in range(num_aux_layers):
            weights.update({f"{name}_{layer}": value for name, value in base.items()})
        if self.loss_align:
            weights["loss_align"] = float(self.loss_align)
        return weights


def weighted_total(losses: dict[str, torch.Tensor], weight_dict: dict[str, float]) -> torch.Tensor:
    """``sum(losses[k] * weight_dict[k])`` over the keys present in both (the training objective)."""
    return sum(losses[name] * weight_dict[name] for name in losses if name in weight_dict)


class SetCriterion(nn.Module):
    """Computes the unweighted loss terms of every decoder layer; see the module docstring.

    Args:
        matcher: default ``HungarianMatcher()`` (the original costs, focal alpha 0.25).
        weights: loss coefficients (``weight_dict``).
        num_decoder_layers: last layer + ``num_decoder_layers - 1`` aux layers are weighted.
        focal_alpha, focal_gamma: of ``loss_ce`` only (the original ``--focal_alpha``; gamma 2 is
            hard-coded there). ``loss_mask`` uses :data:`MASK_FOCAL_ALPHA` / :data:`MASK_FOCAL_GAMMA`.
        mask_out_stride: stride of ``pred_masks`` (4).
        box_loss_visible_only: our option (off = the original): L1/GIoU on visible frames only.
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        weights: LossWeights = LossWeights(),
        num_decoder_layers: int = 4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_out_stride: int = MASK_OUT_STRIDE,
        box_loss_visible_only: bool = False,
    ) -> None:
        super().__init__()
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.weights = weights
        self.weight_dict = weights.weight_dict(num_decoder_layers - 1)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_out_stride = mask_out_stride
        self.box_loss_visible_only = box_loss_visible_only

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms returned by :meth:`forward`."""
        return weighted_total(losses, self.weight_dict)

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Loss terms ``loss_ce, loss_bbox, loss_giou, loss_mask, loss_dice`` (+ ``_{i}`` per aux layer).

        Args:
            outputs: ``pred_logits`` ``[B, T, Q, K]``, ``pred_boxes`` ``[B, T, Q, 4]``
                (normalised cxcywh), ``pred_masks`` ``[B, T, Q, h, w]`` (logits, stride 4),
                ``aux_outputs`` (list of dicts with the same keys, earlier decoder layers first).
                For A2D/JHMDB targets with ``valid_indices``, T may be the whole clip; the
                annotated frames are selected.
            targets: per-clip dicts, see :mod:`referformer.engine.targets`.
        Returns:
            scalar tensors (unweighted).
        """
        outputs = select_annotated_frames(outputs, targets)
        device = outputs["pred_logits"].device
        num_boxes = self.num_boxes(targets, device)

        last_layer = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self.layer_losses(last_layer, targets, self.matcher(last_layer, targets), num_boxes)
        for layer, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self.layer_losses(aux, targets, self.matcher(aux, targets), num_boxes)
            losses.update({f"{name}_{layer}": value for name, value in aux_losses.items()})
        if self.weights.loss_align:
            if "features" not in outputs:
                raise ValueError("loss_align needs the model's features: call it with return_features=True")
            losses["loss_align"] = sentence_object_alignment_loss(outputs["features"], targets)
        return losses

    @staticmethod
    def num_boxes(targets: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
        """Visible target frames of the batch, averaged over processes, at least 1: a float32 0-dim
        tensor on ``device``, never read on the host (no GPU -> CPU synchronisation in the loss)."""
        count = torch.stack([torch.as_tensor(t["valid"], device=device).sum() for t in targets]).sum()
        count = distributed.all_reduce_sum(count.float().reshape(1))
        return torch.clamp(count / distributed.get_world_size(), min=1).reshape(())

    def layer_losses(
        self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Indices, num_boxes: torch.Tensor | float
    ) -> dict[str, torch.Tensor]:
        """The five terms for one decoder layer, given its matching."""
        losses = {"loss_ce": self.loss_labels(outputs, targets, indices, num_boxes)}
        losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        losses.update(self.loss_masks(outputs, targets, indices, num_boxes))
        return losses

    def loss_labels(
        self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Indices, num_boxes: torch.Tensor | float
    ) -> torch.Tensor:
        """Focal classification loss (``focal_alpha``) over all ``T x Q`` slots of ``pred_logits``
        ``[B, T, Q, K]`` -> scalar."""
        logits = outputs["pred_logits"].float()
        batch_size, num_frames, num_queries, num_classes = logits.shape
        logits = logits.reshape(batch_size, num_frames * num_queries, num_classes)
        onehot = torch.zeros_like(logits)
        for b, (query_index, _) in enumerate(indices):
            target = targets[b]
            visible_frames = target["valid"].to(logits.device).nonzero().flatten()
            for query in query_index.tolist():
                slots = visible_frames * num_queries + query
                if num_classes == 1:  # binary referring head
                    classes = torch.zeros_like(visible_frames)
                else:
                    classes = target["labels"].to(logits.device).long()[visible_frames]
                onehot[b, slots, classes] = 1.0
        focal = sigmoid_focal_loss(logits, onehot, num_boxes, self.focal_alpha, self.focal_gamma)
        return focal * logits.shape[1]

    def loss_boxes(
        self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Indices, num_boxes: torch.Tensor | float
    ) -> dict[str, torch.Tensor]:
        """L1 and ``1 - GIoU`` (the original's smoothed GIoU, :mod:`~referformer.engine.box_ops`) of the
        matched query's boxes ``pred_boxes`` ``[B, T, Q, 4]`` on all T frames -> ``loss_bbox``, ``loss_giou``."""
        boxes = outputs["pred_boxes"].float().transpose(1, 2)  # [B, Q, T, 4]
        matched = boxes[_prediction_index(indices)].flatten(0, 1)  # [B*T, 4]
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(matched)
        l1 = F.l1_loss(matched, target_boxes, reduction="none")  # [B*T, 4]: summed at once, as the original
        giou = 1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(matched), box_cxcywh_to_xyxy(target_boxes))
        if self.box_loss_visible_only:
            visible = torch.cat([t["valid"] for t in targets]).to(matched.device) > 0
            l1, giou = l1[visible], giou[visible]
        return {"loss_bbox": l1.sum() / num_boxes, "loss_giou": giou.sum() / num_boxes}

    def loss_masks(
        self, outputs: dict[str, Any], targets: list[dict[str, Any]], indices: Indices, num_boxes: torch.Tensor | float
    ) -> dict[str, torch.Tensor]:
        """Focal (alpha 0.25, gamma 2) and dice losses of the matched query's masks ``pred_masks``
        ``[B, T, Q, h, w]`` -> ``loss_mask``, ``loss_dice``."""
        masks = outputs["pred_masks"].float()
        target_masks = downsample_target_masks(targets, masks.shape[-2:], self.mask_out_stride).to(masks)
        matched = masks.transpose(1, 2)[_prediction_index(indices)].flatten(1)  # [B, T*h*w]
        target_index = torch.cat([torch.full_like(tgt, b) for b, (_, tgt) in enumerate(indices)])
        target_masks = target_masks[target_index].flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(matched, target_masks, num_boxes, MASK_FOCAL_ALPHA, MASK_FOCAL_GAMMA),
            "loss_dice": dice_loss(matched, target_masks, num_boxes),
        }


def _prediction_index(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch_index, query_index)`` of all matches, in batch order (DETR's permutation index)."""
    batch_index = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    query_index = torch.cat([src for src, _ in indices])
    return batch_index, query_index
