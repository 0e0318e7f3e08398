"""Disk stores of the propagation scheduler: frames at the processing size, and one pass's results.

Propagating backward needs the frames in reverse order, and combining the two directions needs the
first pass's results while the second runs; holding either in memory would grow with the video.
Both are spilled instead, one ``.npy`` file per window of ``window`` frames, and read back one
window at a time (the two most recent windows stay cached), so memory stays flat with the length:

* :class:`FrameStore`: RGB ``uint8`` ``[h, w, 3]`` frames, written in order;
* :class:`ResultStore`: ``float16`` ``[K, h, w]`` probabilities per frame, written in any order (a
  backward pass fills windows from the last to the first).

Disk use: ``3 h w`` bytes per frame for the frames and ``2 K h w`` for the results (about 1.2 MB and
1.6 MB per frame of 480x854 with two objects).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["FrameStore", "ResultStore"]

_CACHED_WINDOWS = 2


class _WindowFiles:
    """``window``-frame ``.npy`` files named ``<prefix><i>.npy`` in ``folder``, read through a small cache."""

    def __init__(self, folder: Path, prefix: str, window: int) -> None:
        self.folder, self.prefix, self.window = Path(folder), prefix, window
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def path(self, window_index: int) -> Path:
        return self.folder / f"{self.prefix}{window_index:06d}.npy"

    def save(self, window_index: int, array: np.ndarray) -> None:
        np.save(self.path(window_index), np.ascontiguousarray(array))
        self._cache.pop(window_index, None)

    def frame(self, index: int) -> np.ndarray:
        window_index, offset = divmod(index, self.window)
        array = self._cache.get(window_index)
        if array is None:
            array = np.load(self.path(window_index))
            self._cache[window_index] = array
            while len(self._cache) > _CACHED_WINDOWS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(window_index)
        return array[offset]


class FrameStore:
    """Frames at the processing size, appended window by window, read back by index (any order)."""

    def __init__(self, folder: str | Path, window: int) -> None:
        self._files = _WindowFiles(Path(folder), "frames-", window)
        self.window = window
        self.num_frames = 0
        self.size: tuple[int, int] | None = None  # (h, w)

    def append(self, images: np.ndarray) -> None:
        """Add the next ``window`` frames (fewer for the last window): ``uint8`` ``[n, h, w, 3]``."""
        if self.num_frames % self.window:
            raise RuntimeError("only the last window may be shorter than the store's window")
        self.size = (int(images.shape[1]), int(images.shape[2]))
        self._files.save(self.num_frames // self.window, np.asarray(images, dtype=np.uint8))
        self.num_frames += len(images)

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index``: RGB ``uint8`` ``[h, w, 3]``."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} out of range (0 .. {self.num_frames - 1})")
        return self._files.frame(index)


class ResultStore:
    """Per-frame ``float16`` ``[K, h, w]`` results of one pass, written frame by frame in any order;
    a window goes to disk once all its frames in ``[first, last]`` are in."""

    def __init__(self, folder: str | Path, window: int, shape: tuple[int, int, int], first: int, last: int) -> None:
        self._files = _WindowFiles(Path(folder), "results-", window)
        self.window, self.shape, self.first, self.last = window, shape, first, last
        self._pending: dict[int, tuple[np.ndarray, int]] = {}  # window -> (array, frames still missing)

    def _expected(self, window_index: int) -> int:
        start = max(window_index * self.window, self.first)
        stop = min((window_index + 1) * self.window - 1, self.last)
        return stop - start + 1

    def put(self, index: int, probs: np.ndarray) -> None:
        """Store frame ``index``'s ``[K, h, w]`` probabilities."""
        window_index, offset = divmod(index, self.window)
        array, missing = self._pending.get(window_index, (None, self._expected(window_index)))
        if array is None:
            array = np.zeros((self.window, *self.shape), dtype=np.float16)
        array[offset] = probs
        missing -= 1
        if missing == 0:
            self._pending.pop(window_index, None)
            self._files.save(window_index, array)
        else:
            self._pending[window_index] = (array, missing)

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index``'s probabilities as ``float32`` ``[K, h, w]``."""
        if not self.first <= index <= self.last:
            raise IndexError(f"frame {index} is not in this pass ({self.first} .. {self.last})")
        return self._files.frame(index).astype(np.float32)
