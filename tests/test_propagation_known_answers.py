"""Propagation with hand-computable answers: the real scheduler (passes, windows, spill, combination,
upsampling, labels) and the real memory runner around a "network" whose matching is exact on
colours (``propagation_toys.ColourModel``): on flat-coloured frames an object is exactly the set of
pixels of its colour, in every frame, whichever direction it is propagated in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from propagation_toys import BLUE, GREEN, RED, colour_mask, colour_propagator, draw

from referformer.errors import UserError
from referformer.inference.propagation import (FramePrompt, PassPrompt, PropagationSession, _forward_is_nearer,
                                               label_map, propagate)

H, W = 24, 32


def moving_square(num_frames: int, step: int = 2) -> np.ndarray:
    """A red 6x6 square moving right by ``step`` px per frame on a flat grey background."""
    return draw(H, W, [[(RED, 1 + step * t, 8, 6)] for t in range(num_frames)])


def test_moving_square_forward_from_the_first_frame() -> None:
    frames = moving_square(10)
    truth = colour_mask(frames, RED)
    result = propagate(colour_propagator(), list(frames), [FramePrompt(0, {1: truth[0]})], window=3)
    assert result.object_ids == [1] and result.names == [f"{t:05d}" for t in range(10)]
    assert np.array_equal(result.masks(1), truth)
    assert np.array_equal(result.labels, truth.astype(np.uint8))
    assert result.direction[:, 0].tolist() == [0] + [1] * 9
    assert result.probs[:, 0][truth].min() > 0.99 and result.probs[:, 0][~truth].max() < 0.01


def test_forward_and_backward_from_a_middle_frame() -> None:
    frames = moving_square(11)
    truth = colour_mask(frames, RED)
    result = propagate(colour_propagator(), list(frames), [FramePrompt("00005", {4: truth[5]})], window=4)
    assert np.array_equal(result.masks(4), truth)
    assert result.direction[:, 0].tolist() == [-1] * 5 + [0] + [1] * 5  # backward before, forward after


def test_several_objects_with_overlap_one_label_per_pixel() -> None:
    # the red square crosses over a still blue one (red in front) and a green one moves down
    frames = draw(H, W, [[(BLUE, 14, 6, 8), (RED, 2 + 3 * t, 8, 6), (GREEN, 24, 2 * t, 5)] for t in range(9)])
    red, blue, green = (colour_mask(frames, c) for c in (RED, BLUE, GREEN))
    assert (red[4] & colour_mask(draw(H, W, [[(BLUE, 14, 6, 8)]]), BLUE)[0]).any()  # red hides part of blue
    prompt = FramePrompt(0, {1: red[0], 2: blue[0], 5: green[0]})
    result = propagate(colour_propagator(), list(frames), [prompt], window=4)
    expected = red * 1 + blue * 2 + green * 5
    assert np.array_equal(result.labels, expected.astype(np.uint8))
    assert result.object_ids == [1, 2, 5]
    masks = np.stack([result.masks(o) for o in (1, 2, 5)], 1)
    assert masks.sum(1).max() == 1  # exclusive


def test_overlapping_given_masks_go_to_the_object_listed_last() -> None:
    frames = moving_square(3)
    a = np.zeros((H, W), bool)
    a[0:10, 0:10] = True
    b = np.zeros((H, W), bool)
    b[5:15, 5:15] = True
    with PropagationSession(colour_propagator(), list(frames)) as session:
        first = next(session.run([FramePrompt(0, {7: a, 3: b})]))  # 3 listed last: it keeps the overlap
    assert first.object_ids == [3, 7]
    assert np.array_equal(first.labels[0], np.where(b, 3, np.where(a, 7, 0)))


def test_an_object_that_leaves_and_comes_back() -> None:
    xs = [2, 10, 18, 26, 34, 40, 34, 26, 18, 10]  # leaves on the right (frames 4-6: gone), comes back
    frames = draw(H, W, [[(RED, x, 8, 6)] for x in xs])
    truth = colour_mask(frames, RED)
    assert not truth[4:7].any() and truth[3].any() and truth[7].any()
    result = propagate(colour_propagator(memory_frames=2), list(frames), [FramePrompt(0, {1: truth[0]})], window=4)
    assert np.array_equal(result.masks(1), truth)
    assert result.probs[4:7].max() < 0.01  # nothing while it is gone


def test_memory_is_bounded_by_the_given_frames_plus_the_recent_frames() -> None:
    frames = moving_square(30, step=1)
    backend = colour_propagator(memory_frames=3, memory_every=2)
    truth = colour_mask(frames, RED)
    result = propagate(backend, list(frames), [FramePrompt(0, {1: truth[0]})], window=5)
    assert np.array_equal(result.masks(1), truth)
    sizes = backend.model.memory_sizes
    assert max(sizes) == (1 + 3) * H * W  # one given frame + 3 recent frames, never more
    assert sizes[-10:] == [(1 + 3) * H * W] * 10


class _ConstantBackend:
    """Forward passes yield 0.75 for every object, backward passes 0.25: the combination rule shows."""

    name = "constant"

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return height // 2, width // 2  # results are upsampled back

    def track(self, frames, order: Sequence[int], prompts: Sequence[PassPrompt], num_objects: int) -> Iterator[np.ndarray]:
        value = 0.25 if len(order) > 1 and order[1] < order[0] else 0.75
        h, w = frames[order[0]].shape[:2]
        for _ in order:
            yield np.full((num_objects, h, w), value, np.float32)


def test_each_frame_follows_its_nearest_given_frame_forward_on_ties() -> None:
    frames = moving_square(12)
    square = np.zeros((H, W), bool)
    square[2:6, 2:6] = True
    prompts = [FramePrompt(2, {1: square}), FramePrompt(8, {1: square, 2: square}), FramePrompt(0, {3: square})]
    result = propagate(_ConstantBackend(), list(frames), prompts, window=5)
    assert result.object_ids == [1, 2, 3]
    # object 1 given at 2 and 8: 0-1 backward, 3-5 forward (5 is a tie: forward), 6-7 backward, 9-11 forward
    assert result.direction[:, 0].tolist() == [-1, -1, 0, 1, 1, 1, -1, -1, 0, 1, 1, 1]
    assert result.direction[:, 1].tolist() == [-1] * 8 + [0] + [1] * 3  # object 2 given at 8 only
    assert result.direction[:, 2].tolist() == [0] + [1] * 11  # object 3 given at 0 only
    outside = ~square
    for t, row in enumerate(result.direction):
        for k, d in enumerate(row):
            if d != 0:
                assert np.allclose(result.probs[t, k][outside], 0.75 if d == 1 else 0.25)
    # frame 2: object 1's given square exactly; elsewhere p = (0, 0.25, 0.75): background 0.1875, object 3 wins
    assert np.array_equal(result.masks(1)[2], square) and np.array_equal(result.masks(3)[2], ~square)


@pytest.mark.parametrize(("probs", "expected"), [((0.5,), 0), ((0.6, 0.6), 3), ((0.2, 0.7), 9), ((0.1, 0.1), 0)])
def test_label_map_ties(probs, expected) -> None:
    # background = prod(1 - p); ties go to the earlier channel: background, then the smaller id
    ids = [3, 9][: len(probs)]
    assert label_map(np.array(probs, np.float32).reshape(-1, 1, 1), ids)[0, 0] == expected


def test_bad_prompts_are_one_line_errors() -> None:
    frames = moving_square(4)
    mask = colour_mask(frames[0], RED)
    with PropagationSession(colour_propagator(), list(frames)) as session:
        for prompts, message in [
            ([FramePrompt("00009", {1: mask})], "no frame named '00009'"),
            ([FramePrompt(7, {1: mask})], "frame 7 does not exist"),
            ([FramePrompt(0, {1: mask}), FramePrompt("00000", {2: mask})], "two prompts for frame 00000"),
            ([FramePrompt(0, {1: mask[:10]})], "is 32x10; the frames are 32x24"),
            ([FramePrompt(0, {300: mask})], "object ids must be 1..254"),
            ([], "no object to propagate"),
        ]:
            with pytest.raises(UserError, match=message) as err:
                list(session.run(prompts))
            assert "\n" not in str(err.value)


def test_forward_is_nearer_rule() -> None:
    assert _forward_is_nearer([2, 8], 5) is True  # 3 vs 3: tie -> forward
    assert _forward_is_nearer([2, 8], 6) is False
    assert _forward_is_nearer([2, 8], 1) is False and _forward_is_nearer([2, 8], 10) is True
