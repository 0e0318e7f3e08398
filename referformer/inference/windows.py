"""Grouping a frame stream in windows (the model's clips), and decoding ahead in a thread.

:func:`iter_windows` groups consecutive kept frames in :class:`FrameWindow` s of ``N`` frames (the
clip length); :func:`prefetch_iter` runs any iterator in a background thread, one item ahead, so
that the next window is decoded while the caller computes on the current one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from referformer.errors import UserError
from referformer.inference.frames import Frame

T = TypeVar("T")


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

