"""A2D / JHMDB training: one annotated frame per clip is decoded after the backbone, as in the original."""

from __future__ import annotations

import torch

from referformer.engine.criterion import SetCriterion
from referformer.engine.wiring import ReferFormerCollate
from referformer.models import build_model
from referformer.presets import tiny_config


class _WordIds:
    """Stand-in tokenizer: one id per word, ``padding="longest"`` like the original call."""

    def __call__(self, captions, padding, return_tensors):
        rows = [[0] + [5 + len(word) for word in caption.split()] + [2] for caption in captions]
        width = max(len(row) for row in rows)
        ids = torch.tensor([row + [1] * (width - len(row)) for row in rows])
        return {"input_ids": ids, "attention_mask": (ids != 1).long()}


def _sample(valid_index: int, num_frames: int = 5, size: tuple[int, int] = (64, 64)):
    mask = torch.zeros(1, *size, dtype=torch.bool)
    mask[0, 16:40, 20:44] = True
    target = {
        "masks": mask, "boxes": torch.tensor([[32 / 64, 28 / 64, 24 / 64, 24 / 64]]), "valid": torch.tensor([1]),
        "labels": torch.tensor([0]), "valid_indices": torch.tensor([valid_index]), "caption": "a person running",
        "size": torch.tensor(size), "orig_size": torch.tensor(size),
    }
    return torch.randn(num_frames, 3, *size), target


def test_collate_passes_the_annotated_frames_and_the_loss_uses_them():
    torch.manual_seed(0)
    inputs, targets = ReferFormerCollate(_WordIds())([_sample(2), _sample(0)])
    assert inputs["frame_indices"].tolist() == [[2], [0]]
    model = build_model(tiny_config())
    outputs = model(**inputs)
    assert outputs["pred_masks"].shape[:3] == (2, 1, tiny_config().num_queries)
    losses = SetCriterion(num_decoder_layers=tiny_config().dec_layers)(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    # the decoded frame is the annotated one: same outputs as selecting it by hand after the backbone
    model.eval()
    with torch.no_grad():
        visual = model.encode_video(inputs["frames"], inputs["padding_mask"], inputs["image_sizes"])
        manual = model.decode(visual.select_frames(torch.tensor([[2], [0]])),
                              model.encode_text(inputs["input_ids"], inputs["attention_mask"]))
        again = model(**inputs)
    torch.testing.assert_close(again["pred_masks"], manual["pred_masks"])


def test_collate_without_valid_indices_has_no_frame_indices():
    frames, target = _sample(0)
    del target["valid_indices"]
    inputs, _ = ReferFormerCollate(_WordIds())([(frames, target)])
    assert "frame_indices" not in inputs
