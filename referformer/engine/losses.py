"""Loss and matching-cost primitives of the original criterion (Deformable DETR / CondInst style).

All functions take **logits** (before sigmoid). Shapes: ``N`` predictions, ``M`` targets, ``D``
flattened elements (classes, or frames x pixels of a mask at the mask stride).

The per-element focal term is torchvision's :func:`torchvision.ops.sigmoid_focal_loss`
(``reduction="none"``), which is the same formula as the original ``models/segmentation.py``;
the reductions below are written by hand because the original's normalisation (mean over the
elements of each prediction, sum over predictions, divide by the number of visible target
frames) is not a torchvision reduction.
"""

from __future__ import annotations

import torch
from torchvision.ops import sigmoid_focal_loss as _focal_terms

__all__ = [
    "sigmoid_focal_loss",
    "dice_loss",
    "pairwise_sigmoid_focal_cost",
    "pairwise_dice_coefficient",
    "focal_class_cost",
]


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float | torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss, original normalisation: ``terms.mean(1).sum() / num_boxes`` -> scalar.

    Args:
        logits: ``[N, D]`` or ``[B, N, K]``; the mean is over dim 1, the sum over the rest.
        targets: same shape, values in {0, 1}.
        num_boxes: normaliser (number of visible target frames, averaged over processes, >= 1).
    """
    terms = _focal_terms(logits, targets.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="none")
    return terms.mean(1).sum() / num_boxes


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_boxes: float | torch.Tensor) -> torch.Tensor:
    """Dice loss with the original +1 smoothing -> scalar.

    ``loss_n = 1 - (2 * sum(p * t) + 1) / (sum(p) + sum(t) + 1)`` per row, summed over rows and
    divided by ``num_boxes``.

    Args:
        logits: ``[N, D]`` mask logits (one row per matched query, all frames flattened).
        targets: ``[N, D]`` binary masks.
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    numerator = 2 * (probs * targets).sum(1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_boxes


def pairwise_sigmoid_focal_cost(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean focal loss between every prediction and every target -> ``[N, M]``.

    Args:
        logits: ``[N, ...]`` mask logits, flattened from dim 1.
        targets: ``[M, ...]`` binary masks with the same trailing size.
    """
    logits = logits.flatten(1)
    targets = targets.flatten(1).to(logits.dtype)
    num_preds, num_targets = len(logits), len(targets)
    logits = logits.unsqueeze(1).expand(-1, num_targets, -1)
    targets = targets.unsqueeze(0).expand(num_preds, -1, -1)
    terms = _focal_terms(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    return terms.mean(2)


def pairwise_dice_coefficient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smoothed dice coefficient ``(2 sum(p t) + 1) / (sum p + sum t + 1)`` -> ``[N, M]``.

    The matcher uses ``-coefficient`` as cost (the original does not subtract it from 1; a
    constant does not change the assignment).

    Args:
        logits: ``[N, ...]`` mask logits; targets: ``[M, ...]`` binary masks.
    """
    probs = logits.sigmoid().flatten(1).unsqueeze(1)  # [N, 1, D]
    targets = targets.flatten(1).to(probs.dtype).unsqueeze(0)  # [1, M, D]
    numerator = 2 * (probs * targets).sum(2)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (numerator + 1) / (denominator + 1)


def focal_class_cost(
    logits: torch.Tensor, class_ids: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Deformable-DETR focal classification cost -> ``[Q, M]``.

    ``cost = alpha (1-p)^gamma (-log(p + 1e-8)) - (1-alpha) p^gamma (-log(1-p + 1e-8))`` at the
    target class, with ``p = sigmoid(logits)``.

    Args:
        logits: ``[Q, K]`` class logits of one frame.
        class_ids: ``[M]`` int64 class index per target (0 for the binary referring head).
    """
    probs = logits.sigmoid()
    neg_cost = (1 - alpha) * (probs**gamma) * (-(1 - probs + 1e-8).log())
    pos_cost = alpha * ((1 - probs) ** gamma) * (-(probs + 1e-8).log())
    return pos_cost[:, class_ids] - neg_cost[:, class_ids]
