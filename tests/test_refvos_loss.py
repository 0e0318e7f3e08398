"""RefVOS cross-entropy: labels from dataset targets, padding / unannotated frames ignored, known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from referformer.engine.refvos_loss import (
    IGNORE_INDEX,
    RefVOSCriterion,
    segmentation_labels,
)


def test_labels_ignore_padding_and_missing_frames():
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, 1, 2] = True
    labels = segmentation_labels([{"masks": masks}], num_frames=3, size=(4, 5))
    assert labels.shape == (1, 3, 4, 5)
    assert (labels[0, :2, :3, :4] == masks.long()).all()
    assert (labels[0, :2, 3:] == IGNORE_INDEX).all() and (labels[0, :2, :, 4:] == IGNORE_INDEX).all()
    assert (labels[0, 2] == IGNORE_INDEX).all()  # frame beyond the clip (temporal padding)


def test_labels_follow_valid_indices_and_visibility():
    masks = torch.ones(1, 2, 2, dtype=torch.bool)
    labels = segmentation_labels([{"masks": masks, "valid_indices": torch.tensor([2])}], 4, (2, 2))
    assert (labels[0, 2] == 1).all()
    assert (labels[0, [0, 1, 3]] == IGNORE_INDEX).all()

    target = {"masks": torch.zeros(2, 2, 2, dtype=torch.bool), "valid": torch.tensor([1, 0])}
    every = segmentation_labels([target], 2, (2, 2))
    visible = segmentation_labels([target], 2, (2, 2), visible_frames_only=True)
    assert (every == 0).all()
    assert (visible[0, 0] == 0).all() and (visible[0, 1] == IGNORE_INDEX).all()


def test_labels_reject_bad_targets():
    with pytest.raises(ValueError, match="exceed"):
        segmentation_labels([{"masks": torch.zeros(1, 5, 5)}], 1, (4, 4))
    with pytest.raises(ValueError, match="do not fit"):
        segmentation_labels([{"masks": torch.zeros(1, 2, 2), "valid_indices": torch.tensor([3])}], 2, (2, 2))


def test_loss_value_hand_computed():
    # One clip, 1 frame, padded 2x3; the target covers 2x2 (the last column is padding).
    logits = torch.zeros(1, 1, 2, 2, 3)
    logits[0, 0, 1] = torch.tensor([[2.0, 0.0, 50.0], [-1.0, 0.0, 50.0]])  # fg logits; bg 0
    target = {"masks": torch.tensor([[[True, False], [False, True]]]), "valid": torch.ones(1)}
    loss = RefVOSCriterion()({"seg_logits": logits}, [target])["loss_ce"]
    # -log softmax of the right class: fg at (0,0) logit 2, bg at (0,1) 0, bg at (1,0) fg=-1, fg at (1,1) 0
    expected = (-F.logsigmoid(torch.tensor(2.0)) + math.log(2) - F.logsigmoid(torch.tensor(1.0)) + math.log(2)) / 4
    torch.testing.assert_close(loss, expected)


def test_class_weights_weight_total_and_nothing_labelled():
    logits = torch.randn(1, 2, 2, 4, 4, requires_grad=True)
    masks = torch.rand(2, 4, 4) > 0.5
    weighted = RefVOSCriterion(weight=3.0, class_weights=(0.25, 1.0))
    losses = weighted({"seg_logits": logits}, [{"masks": masks}])
    expected = F.cross_entropy(logits.flatten(0, 1), masks.long().flatten(0, 0), weight=torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(losses["loss_ce"], expected)
    torch.testing.assert_close(weighted.total(losses), 3 * expected)

    nothing = RefVOSCriterion(visible_frames_only=True)(
        {"seg_logits": logits}, [{"masks": masks, "valid": torch.zeros(2)}])["loss_ce"]
    assert nothing.item() == 0.0
    nothing.backward()  # keeps the graph (no error in the training loop)
