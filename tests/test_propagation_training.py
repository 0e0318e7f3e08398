"""Training the propagator: the clip dataset on the synthetic benchmark's layout, a CI-short run of
the ``propagator-tiny`` recipe (the loss falls with margin in seconds), and its export loaded back
as a propagator."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from referformer.data.vos import VOSClipDataset, collate_vos_clips, read_vos_split
from referformer.engine.propagation_training import PropagationCriterion, export_propagator
from referformer.engine.recipes import get_recipe
from referformer.engine.trainer import Trainer
from referformer.engine.wiring import build_components
from referformer.errors import UserError
from referformer.inference.propagation import FramePrompt, propagate
from referformer.inference.propagators import load_propagator


@pytest.fixture(scope="module")
def synthetic_root(make_synthetic_root):
    return make_synthetic_root(5, 6, ["train"])


def test_clip_dataset(synthetic_root) -> None:
    videos = read_vos_split(synthetic_root, "train", "synthetic")
    assert len(videos) == 6 and all(len(v.annotated()) == 10 for v in videos)
    dataset = VOSClipDataset(videos, num_frames=3, max_objects=3)
    np.random.seed(0)
    frames, target = dataset[2]
    assert frames.shape == (3, 3, 96, 128) and target["masks"].shape == (3, 3, 96, 128)
    valid = target["valid"]
    assert valid[0] and target["masks"][0][valid].flatten(1).any(1).all()  # the given objects are in frame 0
    assert not target["masks"][:, ~valid].any() and target["masks"].sum(1).max() <= 1  # padding empty; exclusive
    inputs, targets = collate_vos_clips([dataset[0], dataset[1]])
    assert inputs["frames"].shape == (2, 3, 3, 96, 128) and inputs["first_masks"].shape == (2, 3, 96, 128)
    cropped = VOSClipDataset(videos, num_frames=4, crop=64)[0]
    assert cropped[0].shape == (4, 3, 64, 64)


def test_clip_dataset_at_a_short_side(synthetic_root) -> None:
    """short_side=192 doubles 96x128 frames; the masks are the native ones with every pixel doubled
    (nearest), the same frames and objects drawn from the same RNG state."""
    videos = read_vos_split(synthetic_root, "train", "synthetic")
    native, doubled = VOSClipDataset(videos, num_frames=3), VOSClipDataset(videos, num_frames=3, short_side=192)
    for index in range(len(videos)):
        np.random.seed(index), random.seed(index)
        frames, target = native[index]
        np.random.seed(index), random.seed(index)
        big_frames, big_target = doubled[index]
        assert big_frames.shape == (3, 3, 192, 256) and big_target["masks"].shape == (3, 3, 192, 256)
        assert torch.equal(big_target["masks"][..., ::2, ::2], target["masks"])
        assert torch.equal(big_target["masks"][..., 1::2, 1::2], target["masks"])
        assert torch.equal(big_target["valid"], target["valid"])
        assert (big_frames.mean((-1, -2)) - frames.mean((-1, -2))).abs().max() < 0.05  # bilinear keeps the means
    with pytest.raises(UserError, match="short_side"):
        VOSClipDataset(videos, crop=64, short_side=192)


def test_criterion_is_low_for_the_right_answer() -> None:
    masks = torch.zeros(1, 3, 2, 8, 8, dtype=torch.bool)
    masks[0, :, 0, :4] = True
    masks[0, :, 1, 6:] = True
    labels = masks[0, 1:].float()
    perfect = torch.cat([1 - labels.sum(1, keepdim=True), labels], 1)[None] * 40 - 20
    targets = [{"masks": masks[0], "valid": torch.tensor([True, True])}]
    good = PropagationCriterion()({"logits": perfect}, targets)
    bad = PropagationCriterion()({"logits": -perfect}, targets)
    assert good["loss_ce"] < 1e-6 and good["loss_dice"] < 0.01 and bad["loss_ce"] > 10 and bad["loss_dice"] > 0.9


def test_ci_short_training_the_loss_falls(synthetic_root, tmp_path, one_thread) -> None:
    config = get_recipe("propagator-tiny").replace(max_steps=14, batch_size=2, epochs=100, log_every=100)
    components = build_components(config, synthetic_root)
    trainer = Trainer(config, components.model_factory, components.dataset, tmp_path / "run", components.collate_fn,
                      forward=components.forward, criterion_factory=components.criterion_factory,
                      show_progress=False)
    last = trainer.fit()
    losses = [row["loss"] for row in trainer.history]
    dice = [row["loss_dice"] for row in trainer.history]
    assert len(losses) == 14
    first, end = np.mean(losses[:3]), np.mean(losses[-3:])
    assert end < 0.6 * first, losses  # measured: 3.4 -> 1.1 (the background is learnt first)
    assert np.mean(dice[-3:]) < np.mean(dice[:3]) - 0.05, dice  # and the objects' overlap improves
    folder = export_propagator(last, tmp_path / "export", config)
    backend = load_propagator(folder, "cpu")
    frames = np.random.default_rng(0).integers(0, 255, (4, 96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[20:40, 30:60] = True
    result = propagate(backend, list(frames), [FramePrompt(1, {2: mask})])
    assert result.labels.shape == (4, 96, 128) and np.array_equal(result.masks(2)[1], mask)
