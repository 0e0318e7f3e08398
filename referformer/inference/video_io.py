"""Reading the input of ``referformer segment``: videos, frame folders, images and GIFs, as streams.

:func:`open_source` checks an input path and returns a :class:`FrameSource`. Iterating over the
source decodes frames lazily, one at a time (never the whole video in memory), applying the
sampling options:

- ``stride=k`` keeps every k-th frame of the source (indices 0, k, 2k, ...);
- ``fps=f`` keeps at most ``f`` frames per second of video time: a frame is kept when it is the
  first one in its ``1/f``-second slot (a video at 30 fps sampled at ``fps=10`` keeps frames
  0, 3, 6, ...; asking for more than the source rate keeps every frame, nothing is duplicated).
  It needs frame times, so it works for videos and GIFs but not for folders or single images;
  it must be a positive, finite number;
- ``max_frames=n`` stops after ``n`` kept frames (decoding stops there too).

``stride`` and ``fps`` are exclusive. :meth:`FrameSource.windows` groups the kept frames in windows
of ``N`` consecutive frames (the model's clip length) and can decode the next window in a
background thread while the caller computes on the current one (``prefetch=True``).

Frame names: a video's or GIF's frame is named by its index in the source, zero-padded to five
digits (``00000``, ``00001``, ...: sampling keeps the source numbering); a folder's frame keeps its
file stem; a single image is one frame named by its stem. Folders are listed by
:func:`~referformer.inference.frame_files.list_frame_files` (natural order: ``frame2`` before
``frame10``). Images are RGB ``uint8`` arrays ``[H, W, 3]`` at their original size.

A video that ends before its container says it does (a truncated file) yields the frames it has;
:attr:`FrameSource.incomplete_reason` then says so (and an
:class:`~referformer.inference.decoders.IncompleteInputWarning` is issued), so that the outputs
can be marked incomplete.

The pieces live in their own modules and are re-exported here: :mod:`.frames` (frame and source
types, sampling), :mod:`.frame_files` (folder listing), :mod:`.decoders` (Pillow / PyAV decoding),
:mod:`.windows` (windows and prefetching).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av  # noqa: F401 - ``video_io.av`` is the module decoders.py opens files with (tests patch it)

from referformer.errors import UserError
from referformer.inference import decoders
from referformer.inference.decoders import (
    GIF_DEFAULT_FRAME_MS,
    DecodeReport,
    IncompleteInputWarning,
    image_size,
)
from referformer.inference.frame_files import IMAGE_SUFFIXES, list_frame_files, natural_sort_key
from referformer.inference.frames import (
    Frame,
    FrameSampler,
    SourceInfo,
    SourceKind,
    check_sampling,
    frame_name,
)
from referformer.inference.windows import FrameWindow, iter_windows, prefetch_iter

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the one suffix set of frame images (see frame_files.py)
GIF_EXTENSIONS = frozenset({".gif"})
# Containers tried with PyAV without a second thought; any other file is tried too (FFmpeg probes
# the content), and rejected with a one-line error if FFmpeg cannot find a video stream in it.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)

__all__ = [
    "GIF_DEFAULT_FRAME_MS",
    "GIF_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DecodeReport",
    "Frame",
    "FrameSource",
    "FrameWindow",
    "IncompleteInputWarning",
    "SourceInfo",
    "SourceKind",
    "frame_name",
    "iter_windows",
    "list_frame_files",
    "natural_sort_key",
    "open_source",
    "prefetch_iter",
]


class FrameSource:
    """A checked input that can be iterated (several times) as a lazy stream of :class:`Frame`.

    Build it with :func:`open_source`. ``len()`` is not defined: a video's frame count is only
    known after decoding; :meth:`estimated_length` gives the best guess for progress bars.

    Attributes:
        info: what is known about the input (:class:`SourceInfo`).
        stride, fps, max_frames: the sampling options (``fps`` in frames per second or ``None``).
        last_decode: the :class:`DecodeReport` of the latest pass over the input (filled in while
            it runs), ``None`` before the first.
    """

    def __init__(
        self,
        info: SourceInfo,
        *,
        stride: int = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        frame_paths: list[Path] | None = None,
    ) -> None:
        self.info = info
        self.stride = stride
        self.fps = fps
        self.max_frames = max_frames
        self._frame_paths = frame_paths
        self.last_decode: DecodeReport | None = None

    # --- what the sampled stream looks like --------------------------------------------------
    @property
    def sampled_fps(self) -> float | None:
        """Frame rate of the kept frames (``fps / stride`` or the target ``fps``), if known."""
        if self.info.fps is None:
            return None
        if self.fps is not None:
            return min(self.fps, self.info.fps)
        return self.info.fps / self.stride

    def estimated_length(self) -> int | None:
        """Number of frames the stream will yield: exact for folders/images, else an estimate."""
        n = self.info.num_frames
        if n is None:
            return self.max_frames
        if self.fps is not None and self.info.fps:
            n = math.ceil(n * min(1.0, self.fps / self.info.fps))
        else:
            n = math.ceil(n / self.stride)
        return n if self.max_frames is None else min(n, self.max_frames)

    @property
    def incomplete_reason(self) -> str | None:
        """Why the latest full pass did not get the whole input (a truncated video), else ``None``.

        One sentence, e.g. ``"only 31 of the 40 frames its container declares could be
        decoded"``; ``None`` also before a pass has reached the end of the input.
        """
        return None if self.last_decode is None else self.last_decode.incomplete_reason

    @property
    def complete(self) -> bool:
        """``False`` when the latest pass found the input truncated (see :attr:`incomplete_reason`)."""
        return self.incomplete_reason is None

    # --- decoding ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        sampler = FrameSampler(self.stride, self.fps, self.max_frames)
        report = DecodeReport(frames_declared=self.info.frames_declared)
        self.last_decode = report
        if self.info.kind == "video":
            return decoders.iter_video(self.info, sampler, report)
        if self.info.kind == "gif":
            return decoders.iter_gif(self.info, sampler)
        assert self._frame_paths is not None
        return decoders.iter_images(self.info, self._frame_paths, sampler)

    def windows(self, size: int, *, prefetch: bool = False) -> Iterator[FrameWindow]:
        """Yield the kept frames in windows of ``size`` consecutive frames (the last may be shorter).

        With ``prefetch=True`` the next window is decoded in a background thread while the caller
        works on the current one (at most one window waits in the queue).
        """
        windows = iter_windows(self, size)
        return prefetch_iter(windows, depth=1) if prefetch else windows

    def __repr__(self) -> str:
        return (
            f"FrameSource({str(self.info.path)!r}, kind={self.info.kind!r}, "
            f"size={self.info.width}x{self.info.height}, fps={self.info.fps}, "
            f"stride={self.stride}, sample_fps={self.fps}, max_frames={self.max_frames})"
        )


def open_source(
    path: str | Path,
    *,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
) -> FrameSource:
    """Check ``path`` and return a lazily-decoded :class:`FrameSource` over it.

    ``path`` is a video file (anything FFmpeg decodes: mp4, mov, avi, webm, mkv...), an animated
    or still GIF, a single image (jpg, png, tif, ...) or a folder of frame images (natural order).
    Sampling: ``stride`` (keep every k-th frame) or ``fps`` (frames per second of video time, a
    positive finite number), then at most ``max_frames`` frames. The first frame is decoded here,
    so a missing, unreadable, empty or undecodable input, or a bad option, raises
    :class:`UserError` now, before any work is done.
    """
    path = Path(path)
    fps = check_sampling(stride, fps, max_frames)
    if not path.exists():
        raise UserError(f"input not found: {path}")

    frame_paths: list[Path] | None = None
    if path.is_dir():
        frame_paths = list_frame_files(path)
        info = decoders.folder_info(path, frame_paths, stride, max_frames)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        frame_paths = [path]
        width, height = image_size(path)
        info = SourceInfo(path, "image", width, height, None, 1)
    elif path.suffix.lower() in GIF_EXTENSIONS:
        info = decoders.gif_info(path)
    else:
        info = decoders.video_info(path)

    if fps is not None and info.fps is None:
        raise UserError(
            f"--fps needs frame times, and {info.kind} input {path} has none: use --stride instead"
        )
    return FrameSource(info, stride=stride, fps=fps, max_frames=max_frames, frame_paths=frame_paths)
