"""Tracklet construction over a video (referformer.inference.tracklet_building) with a stand-in
segmenter that finds flat-coloured squares and the real memory propagator on the exact colour-matching
model of ``propagation_toys`` (so every propagated mask is known in advance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from propagation_toys import BLUE, GREEN, RED, colour_propagator, draw

from referformer.inference.tracklet_building import build_tracklets, key_frame_indices

CONFIDENCE = {RED: 0.9, BLUE: 0.8, GREEN: 0.7}


class ColourSegmenter:
    """An ``InstanceSegmenter``: one candidate per known colour present in the image (its exact pixels),
    with a fixed confidence per colour; records the frames it saw (as images)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            self.calls += 1
            rgb = (image * 255).round().to(torch.uint8).permute(1, 2, 0)
            masks, scores = [], []
            for colour, confidence in CONFIDENCE.items():
                mask = (rgb == torch.tensor(colour, dtype=torch.uint8)).all(-1)
                if mask.any():
                    masks.append(mask)
                    scores.append(confidence)
            out.append({"masks": torch.stack(masks) if masks else torch.zeros((0, *rgb.shape[:2]), dtype=torch.bool),
                        "scores": torch.tensor(scores, dtype=torch.float32)})
        return out


@pytest.mark.parametrize("num_frames, k, expected", [
    (13, 3, [0, 6, 12]),  # linspace(0, 12, 3) = 0, 6, 12
    (10, 7, [0, 2, 3, 4, 6, 8, 9]),  # linspace(0, 9, 7) = 0, 1.5, 3, 4.5, 6, 7.5, 9 -> round half to even
    (3, 7, [0, 1, 2]),  # fewer frames than key frames: each frame once
    (1, 7, [0]),
])
def test_key_frames_are_uniform_and_deduplicated(num_frames: int, k: int, expected: list[int]) -> None:
    assert key_frame_indices(num_frames, k) == expected


def test_an_object_that_enters_after_the_first_key_frame_gets_a_tracklet() -> None:
    # 13 frames of 16 x 20; red square everywhere (moving right by 1 px a frame), blue from frame 4 on
    frames = draw(16, 20, [[(RED, 1 + t // 2, 2, 4)] + ([(BLUE, 12, 9, 5)] if t >= 4 else []) for t in range(13)])
    segmenter = ColourSegmenter()
    tracklets = build_tracklets(frames, segmenter, colour_propagator(), num_key_frames=3, max_tracklets=10,
                                iou_threshold=0.5, window=4)
    assert tracklets.key_frames == [0, 6, 12] and segmenter.calls == 3
    # candidates: red on key frames 0, 6, 12 and blue on 6 and 12 (5); the red ones are one tracklet,
    # so are the blue ones: NMS keeps 2 (red first: 0.9 x 1 > blue's 0.8 x 9/13)
    assert tracklets.num_candidates == 5 and len(tracklets) == 2
    red = (frames == RED).all(-1)
    blue = (frames == BLUE).all(-1)
    assert torch.equal(tracklets.masks[0], torch.from_numpy(red))
    assert torch.equal(tracklets.masks[1], torch.from_numpy(blue))  # empty on frames 0-3
    assert tracklets.origins == [0, 6]  # the best-scored duplicate: the first key frame that saw it
    # propagation probability 1 on every frame where the colour is (exact matching), 0 where blue is absent
    assert torch.allclose(tracklets.frame_probs[1], torch.tensor([0.0] * 4 + [1.0] * 9), atol=1e-4)
    assert torch.allclose(tracklets.scores, torch.tensor([0.9, 0.8 * 9 / 13]), atol=1e-4)


def test_more_candidates_than_p_keep_the_best_p() -> None:
    # three disjoint objects on every frame, P = 2: green (the least confident) goes
    frames = draw(12, 24, [[(RED, 1, 1, 4), (BLUE, 8, 1, 4), (GREEN, 16, 4, 4)] for _ in range(5)])
    tracklets = build_tracklets(frames, ColourSegmenter(), colour_propagator(), num_key_frames=2, max_tracklets=2)
    assert tracklets.key_frames == [0, 4] and tracklets.num_candidates == 6
    assert len(tracklets) == 2
    assert torch.equal(tracklets.masks[0], torch.from_numpy((frames == RED).all(-1)))
    assert torch.equal(tracklets.masks[1], torch.from_numpy((frames == BLUE).all(-1)))
    assert torch.allclose(tracklets.confidences, torch.tensor([0.9, 0.8]))


def test_a_video_without_candidates_has_no_tracklet() -> None:
    frames = np.full((4, 8, 8, 3), 40, dtype=np.uint8)
    tracklets = build_tracklets(frames, ColourSegmenter(), colour_propagator(), num_key_frames=3)
    assert len(tracklets) == 0 and tracklets.masks.shape == (0, 4, 8, 8) and tracklets.key_frames == [0, 2, 3]


class FixedSegmenter:
    """An ``InstanceSegmenter`` returning the same candidates on every frame."""

    def __init__(self, masks: torch.Tensor, scores: list[float]) -> None:
        self.masks, self.scores = masks, torch.tensor(scores)

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"masks": self.masks, "scores": self.scores} for _ in images]


def test_overlapping_candidates_of_one_key_frame_the_more_confident_keeps_the_pixels() -> None:
    # one red square (rows 2-9, cols 2-9 of 12 x 12) on 3 frames; candidates on the single key frame 0:
    # 0: the whole square (0.6), 1: its left half (0.9), 2: its top-left quarter (0.3, inside 1)
    frames = draw(12, 12, [[(RED, 2, 2, 8)] for _ in range(3)])
    masks = torch.zeros((3, 12, 12), dtype=torch.bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 2:10, 2:6] = True
    masks[2, 2:6, 2:6] = True
    tracklets = build_tracklets(frames, FixedSegmenter(masks, [0.6, 0.9, 0.3]), colour_propagator(),
                                num_key_frames=1, iou_threshold=1.0)
    # candidate 2 lies inside the more confident 1: no pixel left on its key frame, dropped; at the
    # key frame 1 keeps the left half and 0 only the right half (the given masks, exactly)
    assert tracklets.num_candidates == 2 and len(tracklets) == 2
    assert torch.equal(tracklets.masks[0, 0], masks[1]) and torch.equal(tracklets.masks[1, 0], masks[0] & ~masks[1])
    assert torch.allclose(tracklets.confidences, torch.tensor([0.9, 0.6]))
