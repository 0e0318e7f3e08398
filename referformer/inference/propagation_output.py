"""Outputs of ``referformer propagate``: the ``segment`` layout with palette label maps.

Layout of the output folder ``DIR``::

    DIR/masks/<frame>.png      palette ('P') label map per frame: pixel = object id, 0 background,
                               with the palette of the first --mask (the DAVIS / YouTube-VOS format)
    DIR/results.json           segment's format, one entry per object (below)
    DIR/overlay.mp4            every object in its colour, with boxes and a legend

``results.json`` is written by :class:`~referformer.inference.writers.SegmentationWriter` (crash-safe
journal, strict JSON): its ``"sentences"`` list has one entry per object, ``text`` ``"object <id>"``,
``object_id``, ``query`` ``null``, ``mask_dir`` ``null`` (the masks are in ``masks/``), ``score`` the
mean of its per-frame scores, and per frame ``box_xyxy`` (pixel edges of the mask: ``x0, y0`` of its
top-left pixel, ``x1, y1`` one past its bottom-right pixel; ``null`` when empty), ``score`` (the mean
foreground probability inside the mask; 0 when empty) and ``mask_rle``. Top-level ``task``
(``"propagation"``), ``propagator``, ``objects`` and ``prompts`` (frame names and ids) are added.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from referformer.inference.propagation import PropagatedWindow
from referformer.inference.results import SentenceWindowResult
from referformer.inference.writers import SegmentationWriter, check_output_dir

__all__ = ["LABELS_DIR", "PropagationWriter", "mask_boxes"]

LABELS_DIR = "masks"


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """bool ``[T, H, W]`` -> float64 ``[T, 4]`` boxes ``x0, y0, x1, y1`` (pixel edges; NaN when empty)."""
    boxes = np.full((len(masks), 4), np.nan)
    for t, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[t] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def save_label_png(labels: np.ndarray, path: Path, palette: Sequence[int]) -> None:
    """uint8 ``[H, W]`` label map -> palette PNG (zlib level 1: label maps compress well anyway)."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(list(palette))
    image.save(path, compress_level=1)


class PropagationWriter:
    """Writes a propagation run's outputs window by window (see the module docstring); a context manager.

    Args:
        out_dir: output folder (refused if it exists, unless ``overwrite``: the outputs of an earlier
            run, including ``masks/`` when it holds only PNGs, are removed first).
        object_ids: the objects, ascending; palette: 768 ints for the label maps.
        width, height, fps: frame size and frame rate (``None``: the overlay plays at 10 fps).
        metadata: extra top-level fields of ``results.json``.
    """

    def __init__(self, out_dir: str | Path, object_ids: Sequence[int], palette: Sequence[int], *, width: int,
                 height: int, fps: float | None = None, metadata: dict[str, Any] | None = None,
                 overwrite: bool = False, save_overlay: bool = True, background: bool = False) -> None:
        out_dir = check_output_dir(out_dir, overwrite)
        labels_dir = out_dir / LABELS_DIR
        if overwrite and labels_dir.is_dir() and all(p.is_file() and p.suffix == ".png" for p in labels_dir.iterdir()):
            shutil.rmtree(labels_dir)
        self.object_ids = list(object_ids)
        self.palette = list(palette)
        self.writer = SegmentationWriter(out_dir, [f"object {o}" for o in self.object_ids], width=width,
                                         height=height, fps=fps, metadata=metadata, overwrite=overwrite,
                                         save_masks=False, save_overlay=save_overlay, background=background)
        self.out_dir = self.writer.out_dir
        self.labels_dir = self.out_dir / LABELS_DIR
        self.labels_dir.mkdir(exist_ok=True)
        self._score_sums = np.zeros(len(self.object_ids))
        self._frames = 0

    def write_window(self, window: PropagatedWindow, images: np.ndarray | None) -> None:
        """Write one window's label maps, results and overlay frames (``images``: RGB ``uint8``
        ``[T, H, W, 3]``, needed for the overlay)."""
        for name, labels in zip(window.names, window.labels):
            save_label_png(labels, self.labels_dir / f"{name}.png", self.palette)
        masks = window.masks()
        results = []
        for k in range(len(self.object_ids)):
            inside = masks[:, k].sum(axis=(1, 2))
            total = (window.probs[:, k] * masks[:, k]).sum(axis=(1, 2))
            scores = np.where(inside > 0, total / np.maximum(inside, 1), 0.0)
            self._score_sums[k] += scores.sum()
            results.append(SentenceWindowResult(query=0, score=float(scores.mean()), masks=masks[:, k],
                                                boxes_xyxy=mask_boxes(masks[:, k]), frame_scores=scores))
        self._frames += len(window)
        self.writer.write_window(window.names, images, results)

    def mark_incomplete(self, reason: str) -> None:
        self.writer.mark_incomplete(reason)

    def close(self, *, complete: bool = True) -> dict[str, Any]:
        """Finish the overlay and write ``results.json``; returns its content."""
        if self.writer.summary is None:
            frames = max(self._frames, 1)
            self.writer.set_final([{"object_id": o, "query": None, "mask_dir": None,
                                    "score": float(self._score_sums[k] / frames)}
                                   for k, o in enumerate(self.object_ids)])
        return self.writer.close(complete=complete)

    def __enter__(self) -> PropagationWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.writer.summary is None and exc_type is None:
            self.close()
        else:
            self.writer.close(complete=exc_type is None)
