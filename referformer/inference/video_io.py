"""Reading the input of ``referformer segment``: videos, frame folders, images and GIFs, as streams.

:func:`open_source` checks an input path and returns a :class:`FrameSource`. Iterating over the
source decodes frames lazily, one at a time (never the whole video in memory), applying the
sampling options:

- ``stride=k`` keeps every k-th frame of the source (indices 0, k, 2k, ...);
- ``fps=f`` keeps at most ``f`` frames per second of video time: a frame is kept when it is the
  first one in its ``1/f``-second slot (a video at 30 fps sampled at ``fps=10`` keeps frames
  0, 3, 6, ...; asking for more than the source rate keeps every frame, nothing is duplicated).
  It needs frame times, so it works for videos and GIFs but not for folders or single images;
- ``max_frames=n`` stops after ``n`` kept frames (decoding stops there too).

``stride`` and ``fps`` are exclusive. :meth:`FrameSource.windows` groups the kept frames in windows
of ``N`` consecutive frames (the model's clip length) and can decode the next window in a
background thread while the caller computes on the current one (``prefetch=True``).

Frame names: a video's or GIF's frame is named by its index in the source, zero-padded to five
digits (``00000``, ``00001``, ...: sampling keeps the source numbering); a folder's frame keeps its
file stem; a single image is one frame named by its stem. Folders are read in natural order
(``frame2`` before ``frame10``). Images are RGB ``uint8`` arrays ``[H, W, 3]`` at their original
size; like the original loaders, EXIF orientation tags and video rotation metadata are not applied.

Decoding uses PyAV (FFmpeg) for videos and Pillow for images and GIFs (Pillow applies the GIF frame
disposal rules).
"""

from __future__ import annotations

import math
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from referformer.errors import UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
GIF_EXTENSIONS = frozenset({".gif"})
# Containers tried with PyAV without a second thought; any other file is tried too (FFmpeg probes
# the content), and rejected with a one-line error if FFmpeg cannot find a video stream in it.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
# Browsers show GIF frames with no (or a near-zero) delay for 100 ms; we time them the same way.
GIF_DEFAULT_FRAME_MS = 100

SourceKind = Literal["video", "gif", "folder", "image"]
T = TypeVar("T")


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


@dataclass
class FrameWindow:
    """Consecutive kept frames processed together (one clip of the model).

    Attributes:
        start: position of the first frame among the kept frames (0, N, 2N, ...).
        names: frame names, length ``T``.
        indices: source indices of the frames, length ``T``.
        images: RGB ``uint8`` ``[T, H, W, 3]``, original size.
    """

    start: int
    names: list[str]
    indices: list[int]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class SourceInfo:
    """What is known about an input before decoding it.

    Attributes:
        path: the input path.
        kind: ``"video"``, ``"gif"``, ``"folder"`` or ``"image"``.
        width, height: frame size in pixels.
        fps: the source frame rate (videos, GIFs), ``None`` for folders and images.
        num_frames: number of frames in the source before sampling; exact for folders, images and
            GIFs, the container's figure (possibly an estimate from the duration, or ``None``
            when unknown) for videos.
    """

    path: Path
    kind: SourceKind
    width: int
    height: int
    fps: float | None
    num_frames: int | None


def natural_sort_key(name: str) -> tuple:
    """Sort key ordering digit runs by value: ``frame2`` < ``frame10``; case-insensitive."""
    parts = re.split(r"(\d+)", name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
    return key, name  # the exact name breaks ties ("img02" vs "img2", "A" vs "a")


def frame_name(index: int) -> str:
    """Name of a video/GIF frame: its source index zero-padded to five digits."""
    return f"{index:05d}"


class _Sampler:
    """Decides, frame by frame, which source frames are kept (stride / fps / max_frames)."""

    def __init__(self, stride: int, fps: float | None, max_frames: int | None) -> None:
        self.stride, self.fps, self.max_frames = stride, fps, max_frames
        self.kept = 0
        self._last_slot = -1

    @property
    def done(self) -> bool:
        return self.max_frames is not None and self.kept >= self.max_frames

    def keep(self, index: int, time: float | None) -> bool:
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


class FrameSource:
    """A checked input that can be iterated (several times) as a lazy stream of :class:`Frame`.

    Build it with :func:`open_source`. ``len()`` is not defined: a video's frame count is only
    known after decoding; :meth:`estimated_length` gives the best guess for progress bars.
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

    # --- decoding ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        sampler = _Sampler(self.stride, self.fps, self.max_frames)
        if self.info.kind == "video":
            return _iter_video(self.info, sampler)
        if self.info.kind == "gif":
            return _iter_gif(self.info, sampler)
        assert self._frame_paths is not None
        return _iter_images(self.info, self._frame_paths, sampler)

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


def iter_windows(frames: Iterable[Frame], size: int) -> Iterator[FrameWindow]:
    """Group a frame stream in windows of ``size`` frames; images stacked to ``[T, H, W, 3]``."""
    if size < 1:
        raise UserError(f"window size must be at least 1 frame, got {size}")
    batch: list[Frame] = []
    start = 0

    def flush() -> FrameWindow:
        return FrameWindow(
            start=start,
            names=[f.name for f in batch],
            indices=[f.index for f in batch],
            images=np.stack([f.image for f in batch]),
        )

    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield flush()
            start += len(batch)
            batch = []
    if batch:
        yield flush()


class _Raised:
    """Carries an exception from the producer thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetch_iter(iterable: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Run ``iterable`` in a background thread, keeping up to ``depth`` items ready ahead.

    Exceptions raised by the producer are re-raised in the consumer. Closing the returned
    generator early (``break``, an exception in the caller) stops and joins the thread, which
    closes the underlying iterator (and so the video file) itself.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(_Raised(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="referformer-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


# ------------------------------------------------------------------------------------------------
# Opening and checking inputs
# ------------------------------------------------------------------------------------------------


def open_source(
    path: str | Path,
    *,
    stride: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
) -> FrameSource:
    """Check ``path`` and return a lazily-decoded :class:`FrameSource` over it.

    ``path`` is a video file (anything FFmpeg decodes: mp4, mov, avi, webm, mkv...), an animated
    or still GIF, a single image (jpg, png, ...) or a folder of frame images (natural order).
    Sampling: ``stride`` (keep every k-th frame) or ``fps`` (frames per second of video time),
    then at most ``max_frames`` frames. The first frame is decoded here, so a missing, unreadable,
    empty or undecodable input raises :class:`UserError` now, before any work is done.
    """
    path = Path(path)
    if stride < 1:
        raise UserError(f"--stride must be a positive integer, got {stride}")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {max_frames}")
    if fps is not None and stride != 1:
        raise UserError("use either --stride or --fps to sample frames, not both")
    if not path.exists():
        raise UserError(f"input not found: {path}")

    frame_paths: list[Path] | None = None
    if path.is_dir():
        frame_paths = _list_frame_files(path)
        info = _folder_info(path, frame_paths, stride, max_frames)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        frame_paths = [path]
        width, height = _image_size(path)
        info = SourceInfo(path, "image", width, height, None, 1)
    elif path.suffix.lower() in GIF_EXTENSIONS:
        info = _gif_info(path)
    else:
        info = _video_info(path)

    if fps is not None and info.fps is None:
        raise UserError(
            f"--fps needs frame times, and {info.kind} input {path} has none: use --stride instead"
        )
    return FrameSource(info, stride=stride, fps=fps, max_frames=max_frames, frame_paths=frame_paths)


def _unreadable(path: Path, error: OSError) -> UserError:
    reason = error.strerror or type(error).__name__
    return UserError(f"cannot read {path}: {reason}")


def _list_frame_files(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise _unreadable(folder, error) from None
    files = [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise UserError(
            f"folder {folder} contains no frame images "
            f"(expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header."""
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        raise UserError(f"cannot read {path}: not an image Pillow can decode") from None
    except OSError as error:
        raise _unreadable(path, error) from None


def _folder_info(
    folder: Path, frame_paths: list[Path], stride: int, max_frames: int | None
) -> SourceInfo:
    # Every frame that will be used must have the first frame's size: check the headers now
    # (cheap) rather than fail in the middle of a long run.
    selected = frame_paths[::stride][:max_frames]
    width, height = _image_size(selected[0])
    for path in selected[1:]:
        size = _image_size(path)
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


def _iter_images(info: SourceInfo, paths: list[Path], sampler: _Sampler) -> Iterator[Frame]:
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


def _gif_info(path: Path) -> SourceInfo:
    with _open_gif(path) as image:
        if image.format != "GIF":
            raise UserError(f"cannot read {path}: the file is not a GIF (it is {image.format})")
        num_frames = int(getattr(image, "n_frames", 1))
        fps = 1000.0 / _gif_duration_ms(image)
        width, height = image.size
    return SourceInfo(path, "gif", width, height, fps, num_frames)


def _iter_gif(info: SourceInfo, sampler: _Sampler) -> Iterator[Frame]:
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
    """Decoded frames of the first video stream; FFmpeg errors become :class:`UserError`."""
    stream = _video_stream(container, path)
    count = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                count += 1
                yield frame
    except av.FFmpegError as error:
        raise UserError(
            f"cannot decode {path} after {count} frames: {_ffmpeg_reason(error)}"
        ) from None


def _video_info(path: Path) -> SourceInfo:
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        first = next(_decode(container, path), None)
        if first is None:
            raise UserError(f"cannot read {path}: the video has no frames")
        fps = _stream_fps(stream)
        num_frames: int | None = stream.frames or None
        if num_frames is None and fps:
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            num_frames = round(seconds * fps) or None
        return SourceInfo(path, "video", first.width, first.height, fps, num_frames)


def _iter_video(info: SourceInfo, sampler: _Sampler) -> Iterator[Frame]:
    fallback_fps = info.fps or 1.0
    with _open_container(info.path) as container:
        start: float | None = None
        for index, frame in enumerate(_decode(container, info.path)):
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

