"""Decoding the inputs of ``referformer segment``: frame folders and images (Pillow), GIFs (Pillow,
which applies the frame disposal rules) and videos (PyAV / FFmpeg).

Each kind has an ``*_info`` function, which checks the input and reads its size, rate and frame
count (:class:`~referformer.inference.frames.SourceInfo`), and an ``iter_*`` generator, which
decodes it lazily, one :class:`~referformer.inference.frames.Frame` at a time, keeping the frames a
:class:`~referformer.inference.frames.FrameSampler` keeps. Images are RGB ``uint8`` ``[H, W, 3]``
at their original size; like the original loaders, EXIF orientation tags and video rotation
metadata are not applied. Unreadable or undecodable inputs raise a one-line :class:`UserError`.

A video can end before its container says it does (a file cut by a crash or a partial download):
:func:`iter_video` fills a :class:`DecodeReport` while it decodes. When decoding reached the end of
the file with fewer frames than the container declares, or FFmpeg failed part-way (after at least
one frame; the frames before the failure are kept), the report says why the pass is incomplete and
an :class:`IncompleteInputWarning` is issued.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from referformer.errors import UserError
from referformer.inference.frames import Frame, FrameSampler, SourceInfo, frame_name

# Browsers show GIF frames with no (or a near-zero) delay for 100 ms; we time them the same way.
GIF_DEFAULT_FRAME_MS = 100
# Frames a video may fall short of its declared count and still count as complete: containers'
# counts can include frames the decoder drops (edit lists, B-frame delay) and a count estimated
# from the duration is rounded.
_SHORTFALL_TOLERANCE = 2
_SHORTFALL_TOLERANCE_FRACTION = 0.01


class IncompleteInputWarning(UserWarning):
    """A video decoded to fewer frames than its container declares, or decoding failed part-way."""


class DecodeError(UserError):
    """FFmpeg failed while decoding a video, after ``frames`` frames (``reason``: its message)."""

    def __init__(self, path: Path, frames: int, reason: str) -> None:
        super().__init__(f"cannot decode {path} after {frames} frames: {reason}")
        self.frames, self.reason = frames, reason


@dataclass
class DecodeReport:
    """How one pass over an input went; filled in while decoding.

    Attributes:
        frames_declared: frames the container declares (:attr:`SourceInfo.frames_declared`), or
            ``None`` when it declares none (then only a decoding error makes a pass incomplete).
        frames_decoded: source frames decoded so far (before sampling).
        reached_end: decoding ran to the end of the input (not stopped by ``max_frames`` or by
            the caller closing the stream).
        error: FFmpeg's message when decoding failed part-way, else ``None``.
    """

    frames_declared: int | None = None
    frames_decoded: int = 0
    reached_end: bool = False
    error: str | None = None

    @property
    def incomplete_reason(self) -> str | None:
        """Why the frames of this pass are not the whole input (one sentence), or ``None``."""
        if self.error is not None:
            return f"decoding failed after {self.frames_decoded} frames ({self.error})"
        declared = self.frames_declared
        if self.reached_end and declared:
            tolerance = max(_SHORTFALL_TOLERANCE, math.floor(declared * _SHORTFALL_TOLERANCE_FRACTION))
            if self.frames_decoded < declared - tolerance:
                return f"only {self.frames_decoded} of the {declared} frames its container declares could be decoded"
        return None

    @property
    def complete(self) -> bool:
        """``False`` when :attr:`incomplete_reason` has one (an unfinished pass is not incomplete)."""
        return self.incomplete_reason is None


def _unreadable(path: Path, error: OSError) -> UserError:
    reason = error.strerror or type(error).__name__
    return UserError(f"cannot read {path}: {reason}")


# --- folders and single images (Pillow) ------------------------------------------------------


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of an image file, reading only its header."""
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        raise UserError(f"cannot read {path}: not an image Pillow can decode") from None
    except OSError as error:
        raise _unreadable(path, error) from None


def folder_info(
    folder: Path, frame_paths: list[Path], stride: int, max_frames: int | None
) -> SourceInfo:
    """Info of a folder of frames ``frame_paths`` (listed in order), checking that every frame
    the sampling will use (``stride``, ``max_frames``) has the first one's size."""
    # Every frame that will be used must have the first frame's size: check the headers now
    # (cheap) rather than fail in the middle of a long run.
    selected = frame_paths[::stride][:max_frames]
    width, height = image_size(selected[0])
    for path in selected[1:]:
        size = image_size(path)
        if size != (width, height):
            raise UserError(
                f"frame {path} is {size[0]}x{size[1]} but {selected[0].name} is {width}x{height}: "
                "all frames of a folder must have the same size"
            )
    return SourceInfo(folder, "folder", width, height, None, len(frame_paths))


def _load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise UserError(f"cannot read {path}: not an image Pillow can decode") from None
    except OSError as error:
        raise _unreadable(path, error) from None


def iter_images(info: SourceInfo, paths: list[Path], sampler: FrameSampler) -> Iterator[Frame]:
    """Decode the kept ones of the image files ``paths``; a frame is named by its file stem."""
    for index, path in enumerate(paths):
        if sampler.done:
            return
        if not sampler.keep(index, None):
            continue
        image = _load_rgb(path)
        if image.shape[:2] != (info.height, info.width):
            raise UserError(
                f"frame {path} is {image.shape[1]}x{image.shape[0]} but the first frame is "
                f"{info.width}x{info.height}: all frames must have the same size"
            )
        yield Frame(index=index, name=path.stem, image=image)
        if sampler.done:
            return


# --- GIF (Pillow) ----------------------------------------------------------------------------


def _gif_duration_ms(image: Image.Image) -> float:
    duration = image.info.get("duration") or 0
    return float(duration) if duration > 10 else float(GIF_DEFAULT_FRAME_MS)


def _open_gif(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise UserError(f"cannot read {path}: not a GIF Pillow can decode") from None
    except OSError as error:
        raise _unreadable(path, error) from None


def gif_info(path: Path) -> SourceInfo:
    """Info of a GIF: its size, frame count and rate (from the first frame's delay)."""
    with _open_gif(path) as image:
        if image.format != "GIF":
            raise UserError(f"cannot read {path}: the file is not a GIF (it is {image.format})")
        num_frames = int(getattr(image, "n_frames", 1))
        fps = 1000.0 / _gif_duration_ms(image)
        width, height = image.size
    return SourceInfo(path, "gif", width, height, fps, num_frames)


def iter_gif(info: SourceInfo, sampler: FrameSampler) -> Iterator[Frame]:
    """Decode the kept frames of a GIF; frame times add up the frames' delays."""
    with _open_gif(info.path) as image:
        time_ms = 0.0
        for index in range(info.num_frames or 1):
            if sampler.done:
                return
            try:
                image.seek(index)
            except (EOFError, OSError) as error:
                raise UserError(f"cannot decode frame {index} of {info.path}: {error}") from None
            time = time_ms / 1000.0
            time_ms += _gif_duration_ms(image)
            if sampler.keep(index, time):
                pixels = np.asarray(image.convert("RGB"))
                yield Frame(index=index, name=frame_name(index), image=pixels, time=time)
                if sampler.done:
                    return


# --- videos (PyAV) ---------------------------------------------------------------------------


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except PermissionError as error:
        raise _unreadable(path, error) from None
    except av.FFmpegError as error:
        raise UserError(
            f"cannot read {path}: not a video FFmpeg can decode ({_ffmpeg_reason(error)})"
        ) from None
    except OSError as error:
        raise _unreadable(path, error) from None


def _ffmpeg_reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.VideoStream:
    if not container.streams.video:
        raise UserError(f"cannot read {path}: the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threading inside FFmpeg
    return stream


def _stream_fps(stream: av.video.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _decode(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    """Decoded frames of the first video stream; an FFmpeg error becomes a :class:`DecodeError`."""
    stream = _video_stream(container, path)
    count = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                count += 1
                yield frame
    except av.FFmpegError as error:
        raise DecodeError(path, count, _ffmpeg_reason(error)) from None


def _seconds(duration: int | None, time_base: Fraction | None) -> float:
    """A duration in ``time_base`` units as seconds; 0.0 when unknown."""
    if duration is None or time_base is None:
        return 0.0
    seconds = float(duration * time_base)
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def video_info(path: Path) -> SourceInfo:
    """Info of a video: size of the first frame (decoded here), rate, frame count.

    ``num_frames`` is the container's count, else an estimate from the stream's (or the file's)
    duration; ``frames_declared`` only what the video stream itself declares (a file's duration
    may be an audio track's).
    """
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        first = next(_decode(container, path), None)
        if first is None:
            raise UserError(f"cannot read {path}: the video has no frames")
        fps = _stream_fps(stream)
        declared: int | None = stream.frames or None
        estimate: int | None = declared
        if declared is None and fps:
            stream_seconds = _seconds(stream.duration, stream.time_base)
            file_seconds = _seconds(container.duration, Fraction(1, av.time_base))
            declared = round(stream_seconds * fps) or None
            estimate = round((stream_seconds or file_seconds) * fps) or None
        return SourceInfo(path, "video", first.width, first.height, fps, estimate, declared)


def iter_video(info: SourceInfo, sampler: FrameSampler, report: DecodeReport | None = None) -> Iterator[Frame]:
    """Decode the kept frames of a video, named by their source index; times from the stream.

    ``report`` (optional) is filled in as frames are decoded. A decoding error after the first
    frame ends the stream there (recorded in ``report``); at the end of a pass that is
    incomplete an :class:`IncompleteInputWarning` is issued.
    """
    report = report if report is not None else DecodeReport(frames_declared=info.frames_declared)
    fallback_fps = info.fps or 1.0
    with _open_container(info.path) as container:
        start: float | None = None
        index = -1
        try:
            for index, frame in enumerate(_decode(container, info.path)):
                report.frames_decoded = index + 1
                if sampler.done:
                    return
                time = frame.time
                if time is None:  # no timestamp: assume a constant frame rate
                    time = index / fallback_fps
                if start is None:
                    start = time
                time -= start
                if not sampler.keep(index, time):
                    continue
                if frame.width != info.width or frame.height != info.height:
                    frame = frame.reformat(width=info.width, height=info.height)
                pixels = frame.to_ndarray(format="rgb24")
                yield Frame(index=index, name=frame_name(index), image=pixels, time=time)
                if sampler.done:  # stop before decoding one frame more
                    return
        except DecodeError as error:
            if index < 0:  # nothing decoded at all: not a truncation, an unreadable file
                raise
            report.error = error.reason
        report.reached_end = True
    reason = report.incomplete_reason
    if reason is not None:
        warnings.warn(
            f"{info.path}: {reason}; the file may be truncated, the results cover the frames decoded",
            IncompleteInputWarning,
            stacklevel=2,
        )
