"""Instance-sequence Hungarian matcher of ReferFormer (original ``models/matcher.py``).

Each clip has one referred object, seen in T frames; the model has Q queries per frame, and query
``q`` of every frame forms one instance sequence. The matcher picks the one sequence whose cost
against the object's whole track is lowest (``scipy.optimize.linear_sum_assignment`` on a
``[Q, 1]`` matrix, i.e. an argmin, kept as an assignment for fidelity and generality).

Cost of query ``q`` (weights: class 2, box L1 5, GIoU 2, mask focal 2, dice 5):

* class: focal cost of the target class (column 0 for the binary head), **averaged over the
  visible frames** (``valid == 1``); alpha 0.25, gamma 2 whatever ``--focal_alpha`` says (the
  original hard-codes them; :class:`MatcherCosts`);
* box L1 and ``-GIoU``: **averaged over all T frames**, including invisible ones, whose target
  box is the dataset's ``[0, 0, 0, 0]``; the GIoU is the original's smoothed one (``1e-6`` terms,
  :mod:`referformer.engine.box_ops`), which differs from DETR's against that zero box;
* mask focal and ``-dice``: over the whole ``T x h x w`` volume at once (the frames are
  concatenated, not averaged), targets subsampled to the mask stride
  (:func:`~referformer.engine.targets.downsample_target_masks`).

With the defaults the costs (hence the matched queries) are the original's: the reference cases of
``../shared/reference/training/criterion`` give the same matches and the same best-vs-second-best
cost gap (tests/test_criterion_reference.py).

Deliberate extension: a clip without any visible frame (the original datasets never produce one;
its matcher would fail on an empty ``torch.stack``) gets a zero class cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from referformer.engine.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from referformer.engine.losses import focal_class_cost, pairwise_dice_coefficient, pairwise_sigmoid_focal_cost
from referformer.engine.targets import MASK_OUT_STRIDE, downsample_target_masks

__all__ = ["MatcherCosts", "HungarianMatcher"]

Indices = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MatcherCosts:
    """Weights of the matching costs (original ``--set_cost_*`` defaults) and the focal parameters of
    the class and mask costs.

    ``focal_alpha`` / ``focal_gamma`` default to what the original matcher hard-codes (0.25, 2 in
    the class cost; the defaults of its mask focal cost): the original's ``--focal_alpha`` never
    reaches the matcher, and neither does :class:`~referformer.engine.criterion.SetCriterion`'s
    ``focal_alpha`` here. Any other value is our departure from the original.
    """

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    cost_mask: float = 2.0
    cost_dice: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


class HungarianMatcher(nn.Module):
    """Matches each clip's referred object to one instance sequence (query index)."""

    def __init__(self, costs: MatcherCosts = MatcherCosts(), mask_out_stride: int = MASK_OUT_STRIDE) -> None:
        super().__init__()
        weights = (costs.cost_class, costs.cost_bbox, costs.cost_giou, costs.cost_mask, costs.cost_dice)
        if not any(weights):
            raise ValueError("all matching costs are 0")
        self.costs = costs
        self.mask_out_stride = mask_out_stride

    @torch.no_grad()
    def cost_matrix(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Per clip the weighted cost of every query against the clip's object -> list of ``[Q, 1]``.

        Args:
            outputs: ``pred_logits`` ``[B, T, Q, K]``, ``pred_boxes`` ``[B, T, Q, 4]`` (normalised
                cxcywh), ``pred_masks`` ``[B, T, Q, h, w]`` (logits at the mask stride).
            targets: per-clip dicts (``labels`` ``[T]``, ``boxes`` ``[T, 4]``, ``masks``
                ``[T, H, W]``, ``valid`` ``[T]``), see :mod:`referformer.engine.targets`.
        """
        logits = outputs["pred_logits"].float()
        boxes = outputs["pred_boxes"].float()
        masks = outputs["pred_masks"].float()
        batch_size, num_frames, num_queries = masks.shape[:3]
        target_masks = downsample_target_masks(targets, masks.shape[-2:], self.mask_out_stride).to(masks)
        c = self.costs

        matrices = []
        for b in range(batch_size):
            target = targets[b]
            valid = target["valid"]
            labels = _labels(target, num_frames, logits.device)
            target_boxes = target["boxes"].to(boxes)

            class_costs = []
            for t in range(num_frames):
                if valid[t] == 0:
                    continue
                class_ids = torch.zeros(1, dtype=torch.long, device=logits.device)
                if logits.shape[-1] > 1:  # multi-class head; binary referring head uses column 0
                    class_ids = labels[t].view(1)
                class_costs.append(focal_class_cost(logits[b, t], class_ids, c.focal_alpha, c.focal_gamma))
            if class_costs:
                cost_class = torch.stack(class_costs).mean(0)
            else:  # no visible frame (see module docstring)
                cost_class = logits.new_zeros(num_queries, 1)

            bbox_costs, giou_costs = [], []
            for t in range(num_frames):
                target_box = target_boxes[t].unsqueeze(0)
                bbox_costs.append(torch.cdist(boxes[b, t], target_box, p=1))
                giou_costs.append(
                    -generalized_box_iou(box_cxcywh_to_xyxy(boxes[b, t]), box_cxcywh_to_xyxy(target_box))
                )
            cost_bbox = torch.stack(bbox_costs).mean(0)
            cost_giou = torch.stack(giou_costs).mean(0)

            query_masks = masks[b].transpose(0, 1)  # [Q, T, h, w]
            object_masks = target_masks[b].unsqueeze(0)  # [1, T, h, w]
            cost_mask = pairwise_sigmoid_focal_cost(query_masks, object_masks, c.focal_alpha, c.focal_gamma)
            cost_dice = -pairwise_dice_coefficient(query_masks, object_masks)

            matrix = (
                c.cost_class * cost_class
                + c.cost_bbox * cost_bbox
                + c.cost_giou * cost_giou
                + c.cost_mask * cost_mask
                + c.cost_dice * cost_dice
            )
            matrices.append(matrix.view(num_queries, -1))
        return matrices

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> Indices:
        """Returns per clip ``(query_indices, target_indices)``, int64 ``[1]`` each (on the CPU)."""
        indices = []
        for b, matrix in enumerate(self.cost_matrix(outputs, targets)):
            matrix = matrix.cpu()
            if not torch.isfinite(matrix).all():
                raise FloatingPointError(f"non-finite matching cost for clip {b}: {matrix.flatten().tolist()}")
            rows, cols = linear_sum_assignment(matrix.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def _labels(target: dict[str, Any], num_frames: int, device: torch.device) -> torch.Tensor:
    """``labels`` ``[T]`` of a target, zeros when absent (JHMDB targets have none)."""
    if "labels" in target:
        return target["labels"].to(device).long()
    return torch.zeros(num_frames, dtype=torch.long, device=device)
