"""Which frames a sample reads: the original training-clip sampling and evaluation windows.

All indices are 0-based positions in the video's sorted frame list unless stated otherwise.
Random draws use a ``random.Random`` (the original uses Python's global ``random`` module; pass
``random`` itself, or a seeded ``random.Random``, to get the same stream).
"""

from __future__ import annotations

import math
import random as _random

__all__ = ["clip_starts", "sample_train_clip", "centered_window"]


def clip_starts(num_video_frames: int, num_frames: int) -> range:
    """Start frames of the training metas of one (video, expression): ``range(0, L, T)``.

    A video of L frames contributes ``ceil(L / T)`` samples per expression.
    """
    return range(0, num_video_frames, num_frames)


def sample_train_clip(
    frame_id: int,
    num_video_frames: int,
    num_frames: int,
    rng: _random.Random | None = None,
    local: bool = True,
) -> list[int]:
    """The original local + global clip sampling around ``frame_id`` (ytvos/davis/a2d/mevis).

    1. ``[frame_id, max(0, frame_id - a), min(L - 1, frame_id + b)]`` with ``a, b ~ randint(1, 3)``
       (skipped when ``local`` is False: Ref-YouTube-VOS and MeViS with ``num_frames == 1``).
    2. If T > 3: ``T - 3`` "global" frames drawn without replacement from
       ``[0, min(sample)) + [max(sample), L)`` (``max(sample)`` itself included, as in the
       original); if that pool is too small, from all frames; if the video is shorter than
       ``T - 3``, every frame plus ``T - 3 - L`` random ones.
    3. Sorted. Repeats are possible; the caller reads the first T entries (the returned list can
       be longer than T when T == 2).

    Returns a sorted list of frame positions.
    """
    rng = rng if rng is not None else _random
    length = num_video_frames
    sample = [frame_id]
    if local:
        before, after = rng.randint(1, 3), rng.randint(1, 3)
        sample += [max(0, frame_id - before), min(length - 1, frame_id + after)]
    if num_frames > 3:
        all_frames = list(range(length))
        pool = all_frames[: min(sample)] + all_frames[max(sample):]
        n_global = num_frames - len(sample)
        if len(pool) > n_global:
            sample += [pool[i] for i in rng.sample(range(len(pool)), n_global)]
        elif length >= n_global:
            sample += rng.sample(range(length), n_global)
        else:
            sample += rng.sample(range(length), n_global - length) + all_frames
    sample.sort()
    return sample


def centered_window(center: int, num_frames: int, first: int, last: int) -> list[int]:
    """Evaluation window of A2D / JHMDB: ``range(center - T // 2, center + (T + 1) // 2)``
    clamped to ``[first, last]`` (edge frames repeated), sorted.

    A2D uses 0-based positions (``first = 0, last = L - 1``); JHMDB 1-based frame numbers
    (``first = 1, last = video_total_frames``).
    """
    window = [min(max(i, first), last) for i in range(center - num_frames // 2, center + (num_frames + 1) // 2)]
    window.sort()
    return window


def num_clips(num_video_frames: int, num_frames: int) -> int:
    """``ceil(L / T)``: the number of training samples one expression of an L-frame video gives."""
    return math.ceil(num_video_frames / num_frames)
