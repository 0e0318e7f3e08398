"""What a decoded input is made of, and which of its frames are kept.

- :class:`Frame`: one decoded frame (RGB ``uint8`` ``[H, W, 3]``, its source index, name and time);
- :class:`SourceInfo`: what is known about an input before decoding it;
- :class:`FrameSampler`: the sampling rule of ``referformer segment`` (``--stride`` / ``--fps`` /
  ``--max-frames``), applied frame by frame while decoding;
- :func:`check_sampling` and :func:`check_frame_rate`: the checks a frame rate or a sampling option
  goes through where it enters the I/O layer (a bad value is a one-line :class:`UserError`).

Sampling: ``stride=k`` keeps every k-th frame of the source (indices 0, k, 2k, ...); ``fps=f`` keeps
a frame when it is the first one in its ``1/f``-second slot of video time (a 30 fps video sampled at
``fps=10`` keeps frames 0, 3, 6, ...; asking for more than the source rate keeps every frame,
nothing is duplicated); ``max_frames=n`` stops after ``n`` kept frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from referformer.errors import UserError

SourceKind = Literal["video", "gif", "folder", "image"]
# fps sampling computes slot = floor(time * fps): above this rate (one frame per nanosecond) every
# frame is in its own slot anyway, and the product of a huge finite rate cannot overflow to inf.
_MAX_SLOT_RATE = 1e9


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: position of the frame in the source, before sampling (0-based).
        name: frame name used for outputs (``00042`` for videos/GIFs, the file stem for folders).
        image: RGB pixels, ``uint8`` ``[H, W, 3]``, original size.
        time: presentation time in seconds from the first frame (``None`` for folders/images).
    """

    index: int
    name: str
    image: np.ndarray
    time: float | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What is known about an input before decoding it.

    Attributes:
        path: the input path.
        kind: ``"video"``, ``"gif"``, ``"folder"`` or ``"image"``.
        width, height: frame size in pixels.
        fps: the source frame rate in frames per second (videos, GIFs), ``None`` for folders and
            images.
        num_frames: number of frames in the source before sampling; exact for folders, images and
            GIFs, the container's figure (possibly an estimate from the duration, or ``None``
            when unknown) for videos.
        frames_declared: for videos, the frame count the container declares for the video
            stream (its count, or the stream's own duration times ``fps``), against which a
            decoding pass is checked (:class:`~referformer.inference.decoders.DecodeReport`);
            ``None`` when it declares none, and for the other kinds.
    """

    path: Path
    kind: SourceKind
    width: int
    height: int
    fps: float | None
    num_frames: int | None
    frames_declared: int | None = None


def frame_name(index: int) -> str:
    """Name of a video/GIF frame: its source index zero-padded to five digits."""
    return f"{index:05d}"


def check_frame_rate(fps: float, option: str = "--fps") -> float:
    """``fps`` as a ``float`` if it is a positive, finite number of frames per second.

    Otherwise (0, negative, NaN, infinite, not a number) raises a one-line :class:`UserError`
    naming ``option``.
    """
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise UserError(f"{option} must be a number of frames per second, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{option} must be a positive, finite number of frames per second, got {fps}")
    return value


def check_sampling(stride: int, fps: float | None, max_frames: int | None) -> float | None:
    """Check the sampling options (names as the CLI spells them); returns ``fps`` as a float."""
    if stride < 1:
        raise UserError(f"--stride must be a positive integer, got {stride}")
    if fps is not None:
        fps = check_frame_rate(fps, "--fps")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    if fps is not None and stride != 1:
        raise UserError("use either --stride or --fps to sample frames, not both")
    return fps


class FrameSampler:
    """Decides, frame by frame, which source frames are kept (stride / fps / max_frames).

    Args:
        stride: keep every ``stride``-th source frame (1 = all).
        fps: keep at most ``fps`` frames per second of video time (needs frame times); a checked
            rate (:func:`check_frame_rate`), or ``None``.
        max_frames: stop after this many kept frames, or ``None``.
    """

    def __init__(self, stride: int, fps: float | None, max_frames: int | None) -> None:
        self.stride, self.max_frames = stride, max_frames
        self.fps = None if fps is None else min(float(fps), _MAX_SLOT_RATE)
        self.kept = 0
        self._last_slot = -1

    @property
    def done(self) -> bool:
        """Whether ``max_frames`` frames were kept (decoding can stop)."""
        return self.max_frames is not None and self.kept >= self.max_frames

    def keep(self, index: int, time: float | None) -> bool:
        """Whether to keep the source frame ``index`` shown at ``time`` seconds (counts it if so)."""
        if self.done:
            return False
        if self.fps is not None:
            assert time is not None, "fps sampling needs frame times"
            slot = math.floor(time * self.fps + 1e-6)
            if slot <= self._last_slot:
                return False
            self._last_slot = slot
        elif index % self.stride != 0:
            return False
        self.kept += 1
        return True
