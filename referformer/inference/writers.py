"""Outputs of ``referformer segment``, written incrementally, window by window.

Layout of the output folder ``DIR``::

    DIR/results.json               every sentence's query, score and per-frame box / score / RLE
    DIR/results.partial.jsonl      the same, one JSON line per window, while the run is going
    DIR/<i>_<slug>/<frame>.png     binary mask of sentence i (0-based), 0/255 'L' PNG per frame
    DIR/overlay.mp4                H.264 overlay of all sentences (see visualize.py)

:class:`SegmentationWriter` writes them all; each file has its own module: ``results.json`` and its
JSON Lines journal in :mod:`.results_json` (the format is documented there: boxes of frames whose
mask is empty are ``null``, non-finite numbers are ``null``), PNG masks and RLE in
:mod:`.mask_files`, the overlay in :mod:`.overlay_output`. What it is given,
:class:`~referformer.inference.results.SentenceWindowResult`, comes from :mod:`.results`. Their
public names are re-exported here.

What survives a crash: PNG masks are written as each window finishes, the overlay is a fragmented
MP4 flushed frame by frame, and each window's results are appended (and flushed) to
``results.partial.jsonl``. At the end the JSON Lines file is turned into ``results.json`` and
removed. A Python exception or Ctrl-C also ends in a ``results.json`` (with ``"complete": false``);
after a hard crash (killed process) the partial file stays, and :func:`finalize_results` turns it
into ``results.json`` (``python -c "from referformer.inference.writers import finalize_results;
finalize_results('DIR')"``). An input found to be cut short (:meth:`SegmentationWriter.mark_incomplete`)
also gives ``"complete": false``, with the reason under ``"warnings"``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from referformer.errors import UserError
from referformer.inference.frames import check_frame_rate
from referformer.inference.mask_files import (
    MASK_DIR_PATTERN,
    MaskPngWriter,
    decode_mask_rle,
    encode_mask_rle,
    sentence_dir_name,
    sentence_slug,
)
from referformer.inference.overlay_output import OVERLAY_MP4, OVERLAY_RENDERING, OverlayOutput
from referformer.inference.results import SPILL_PREFIX, SentenceWindowResult
from referformer.inference.results_json import (
    RESULTS_JSON,
    RESULTS_PARTIAL,
    RESULTS_VERSION,
    ResultsWriter,
    finalize_results,
)

__all__ = [
    "DEFAULT_OVERLAY_FPS",
    "OVERLAY_MP4",
    "OVERLAY_RENDERING",
    "RESULTS_JSON",
    "RESULTS_PARTIAL",
    "RESULTS_VERSION",
    "SPILL_PREFIX",
    "MaskPngWriter",
    "ResultsWriter",
    "SegmentationWriter",
    "SentenceWindowResult",
    "check_output_dir",
    "decode_mask_rle",
    "encode_mask_rle",
    "finalize_results",
    "prepare_output_dir",
    "sentence_dir_name",
    "sentence_slug",
]

# Frame rate of overlay.mp4 when the input has none (a folder of frames, a single image).
DEFAULT_OVERLAY_FPS = 10.0


def check_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check that ``path`` can be used as the output folder, without creating anything.

    An existing path is refused unless ``overwrite`` (then it must be a folder).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"output path {path} exists and is not a folder: choose another --out")
        if not overwrite:
            raise UserError(f"output folder {path} already exists: pass --overwrite or choose another --out")
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {parent}: choose another --out")
    return path


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create the output folder; with ``overwrite``, first remove the outputs of an earlier run.

    Only what a run writes is removed (``results.json``, ``results.partial.jsonl``,
    ``overlay.mp4`` and ``<i>_<slug>/`` folders holding only PNG files); other files are left.
    """
    path = check_output_dir(path, overwrite)
    if path.exists():
        for name in (RESULTS_JSON, RESULTS_PARTIAL, OVERLAY_MP4, OVERLAY_RENDERING):
            (path / name).unlink(missing_ok=True)
        for child in path.iterdir():
            is_mask_dir = child.is_dir() and MASK_DIR_PATTERN.match(child.name)
            if is_mask_dir and all(f.is_file() and f.suffix == ".png" for f in child.iterdir()):
                shutil.rmtree(child)
            elif child.is_dir() and child.name.startswith(SPILL_PREFIX):  # left by a killed run
                shutil.rmtree(child)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {path}: {error.strerror or error}") from None
    return path


class SegmentationWriter:
    """All outputs of a run: results (JSON Lines, then JSON), PNG masks and the overlay video.

    Use as a context manager; leaving it normally marks the results complete, leaving it with an
    exception still writes ``results.json`` (``"complete": false``) and closes the video properly.

    Args:
        out_dir: output folder; refused if it exists, unless ``overwrite``.
        sentences: the sentences, in order.
        width, height: frame size in pixels.
        fps: frame rate of the kept frames and of the overlay, frames per second (``None``: the
            input has none, the overlay plays at :data:`DEFAULT_OVERLAY_FPS`); anything but a
            positive finite number is a :class:`UserError`.
        metadata: extra top-level fields of ``results.json`` (input path, kind...).
        save_masks, save_overlay: write the PNG masks / ``overlay.mp4``.
        alpha: opacity of mask colours in the overlay.
        background: write each window in a background thread while the caller computes the
            next one (at most one window waits; H.264 encoding and PNG compression release the
            GIL).
    """

    def __init__(
        self,
        out_dir: str | Path,
        sentences: Sequence[str],
        *,
        width: int,
        height: int,
        fps: float | None = None,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
        save_masks: bool = True,
        save_overlay: bool = True,
        alpha: float = 0.5,
        background: bool = False,
    ):
        if fps is not None:
            fps = check_frame_rate(fps, "the overlay frame rate (fps)")
        self.out_dir = prepare_output_dir(out_dir, overwrite)
        self.sentences = list(sentences)
        self.width, self.height = width, height
        self.fps = fps if fps is not None else DEFAULT_OVERLAY_FPS
        self.frames_written = 0
        # per sentence: frames whose mask is not empty
        self.frames_with_mask = [0] * len(self.sentences)
        self.overrides: list[dict[str, Any] | None] | None = None
        meta = {"width": width, "height": height, "fps": fps, **(metadata or {})}
        self.results = ResultsWriter(self.out_dir, self.sentences, meta)
        self.masks = MaskPngWriter(self.out_dir, self.sentences) if save_masks else None
        self.overlay: OverlayOutput | None = None
        if save_overlay:
            self.overlay = OverlayOutput(self.out_dir, self.sentences, width, height, self.fps, alpha=alpha)
        self.summary: dict[str, Any] | None = None
        self.frames_submitted = 0
        # frames whose masks were rewritten after they were first written (the overlay is then stale)
        self.frames_rewritten = 0
        self._window_mask_counts: dict[tuple[int, int], int] = {}  # (start, sentence) -> frames with mask
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="referformer-writer")
            if background
            else None
        )
        self._pending: Future | None = None

    def write_window(
        self, names: Sequence[str], images: np.ndarray | None, results: Sequence[SentenceWindowResult]
    ) -> None:
        """Write one window: ``names`` (T frame names), ``images`` RGB ``uint8`` ``[T, H, W, 3]``
        (needed for the overlay only), and one :class:`SentenceWindowResult` per sentence.

        With ``background=True`` the window is checked here and written by the writer thread
        (the arrays must not be modified afterwards); an error of the previous window's writing
        is raised here.
        """
        if len(results) != len(self.sentences):
            raise ValueError(f"expected {len(self.sentences)} sentence results, got {len(results)}")
        results = [r.checked(len(names), self.height, self.width, f"sentence {i}") for i, r in enumerate(results)]
        if self.overlay is not None and images is None:
            raise ValueError("the overlay needs the window's images")
        start = self.frames_submitted
        self.frames_submitted += len(names)
        self._submit(self._write_now, start, list(names), images, results)

    def rewrite_window(self, start: int, names: Sequence[str], sentence: int, result: SentenceWindowResult) -> None:
        """Replace sentence ``sentence``'s results on the frames ``start .. start + T`` written earlier.

        Rewrites the PNG masks and appends the new results to the JSON Lines file (they replace the
        old ones in ``results.json``). The overlay is not touched: see :meth:`rerender_overlay`.
        """
        result = result.checked(len(names), self.height, self.width, f"sentence {sentence}")
        self._submit(self._rewrite_now, int(start), list(names), int(sentence), result)

    def set_final(self, choices: Sequence[dict[str, Any] | None]) -> None:
        """Record the sentence-level fields chosen over the whole video (``query``, ``score``), one
        dict (or ``None``) per sentence; they are written to the JSON Lines file at once, so they
        survive a crash, and override the per-window values in ``results.json``."""
        if len(choices) != len(self.sentences):
            raise ValueError(f"expected {len(self.sentences)} choices, got {len(choices)}")
        self._wait_pending()
        self.results.write_final(choices)

    def mark_incomplete(self, reason: str) -> None:
        """Record that the results do not cover the whole input, e.g. a truncated video
        (``reason``: one sentence, such as ``FrameSource.incomplete_reason``). It is written to the
        JSON Lines file at once; ``results.json`` will say ``"complete": false`` and list the
        reason under ``"warnings"``."""
        self._wait_pending()
        self.results.mark_incomplete(reason)

    def _submit(self, function: Any, *args: Any) -> None:
        if self._executor is None:
            function(*args)
            return
        self._wait_pending()  # at most one window queued: memory stays bounded, order kept
        self._pending = self._executor.submit(function, *args)

    def _wait_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write_now(
        self, start: int, names: list[str], images: np.ndarray | None, results: list[SentenceWindowResult]
    ) -> None:
        if self.masks is not None:
            for i, result in enumerate(results):
                self.masks.write(i, names, result.masks)
        if self.overlay is not None and images is not None:
            self.overlay.write_window(images, results)
        self.results.write_window(names, results, start)  # last: a window in the JSON is fully on disk
        self.frames_written += len(names)
        for i, result in enumerate(results):
            count = int(result.frames_with_mask().sum())
            self._window_mask_counts[start, i] = count
            self.frames_with_mask[i] += count

    def _rewrite_now(self, start: int, names: list[str], sentence: int, result: SentenceWindowResult) -> None:
        if self.masks is not None:
            self.masks.write(sentence, names, result.masks)
        self.results.rewrite_window(start, names, sentence, result)
        count = int(result.frames_with_mask().sum())
        self.frames_with_mask[sentence] += count - self._window_mask_counts.get((start, sentence), 0)
        self._window_mask_counts[start, sentence] = count
        self.frames_rewritten += len(names)

    def rerender_overlay(self, images: Iterable[np.ndarray]) -> int:
        """Draw ``overlay.mp4`` again from the final results (after :meth:`close`), e.g. when windows
        were rewritten. ``images``: the frames again, RGB ``uint8`` ``[H, W, 3]``, in order (re-read
        the source). Written to a temporary file first, then renamed over the old overlay. Returns
        the number of frames drawn."""
        if self.summary is None:
            raise RuntimeError("close() the writer before re-rendering the overlay")
        if self.overlay is None:
            return 0
        return self.overlay.rerender(images, self.summary)

    def close(self, *, complete: bool = True) -> dict[str, Any]:
        """Finish the overlay and write ``results.json``; returns its content (idempotent)."""
        if self.summary is None:
            try:
                try:
                    self._wait_pending()
                finally:
                    if self._executor is not None:
                        self._executor.shutdown(wait=True)
                    if self.overlay is not None:
                        self.overlay.close()
            finally:
                self.summary = self.results.finalize(complete=complete, overrides=self.overrides)
        return self.summary

    def __enter__(self) -> SegmentationWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)
