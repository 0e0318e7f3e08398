"""``overlay.mp4`` of a run: each window's frames with every sentence's masks, boxes and legend.

Frames are drawn by :class:`~referformer.inference.visualize.OverlayRenderer` and encoded by
:class:`~referformer.inference.visualize.OverlayVideoWriter` (fragmented MP4, flushed frame by
frame, so a crash keeps what was written). When masks were rewritten after their window was drawn,
:meth:`OverlayOutput.rerender` draws the video again from the final ``results.json`` into
``rendering.overlay.mp4`` and renames it over ``overlay.mp4``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from referformer.inference.mask_files import decode_mask_rle
from referformer.inference.results import SentenceWindowResult
from referformer.inference.visualize import DEFAULT_ALPHA, OverlayRenderer, OverlayVideoWriter

OVERLAY_MP4 = "overlay.mp4"
OVERLAY_RENDERING = "rendering.overlay.mp4"  # the overlay being re-drawn, renamed when done


class OverlayOutput:
    """Writes ``out_dir/overlay.mp4`` window by window.

    Args:
        out_dir: the output folder (exists).
        sentences: the sentences, in order (sentence ``i`` is drawn in ``PALETTE[i % 10]``).
        width, height: input frame size in pixels (the video is taller when the legend goes in a
            band below small frames: :attr:`OverlayRenderer.output_size`).
        fps: frame rate of the video, frames per second (positive, finite).
        alpha: opacity of mask colours.
    """

    def __init__(
        self, out_dir: Path, sentences: Sequence[str], width: int, height: int, fps: float,
        *, alpha: float = DEFAULT_ALPHA,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.fps = fps
        self.renderer = OverlayRenderer(sentences, width, height, alpha=alpha)
        self.video = OverlayVideoWriter(self.out_dir / OVERLAY_MP4, *self.renderer.output_size, fps)

    def write_window(self, images: np.ndarray, results: Sequence[SentenceWindowResult]) -> None:
        """Draw and encode one window: ``images`` RGB ``uint8`` ``[T, H, W, 3]``, one result per
        sentence (masks ``[T, H, W]``, boxes ``[T, 4]`` in pixels)."""
        for t, image in enumerate(np.asarray(images)):
            drawn = self.renderer.draw(image, [r.masks[t] for r in results], [r.boxes_xyxy[t] for r in results])
            self.video.write(drawn)

    def close(self) -> None:
        """Finish ``overlay.mp4`` (safe to call twice)."""
        self.video.close()

    def rerender(self, images: Iterable[np.ndarray], results: dict[str, Any]) -> int:
        """Draw ``overlay.mp4`` again from ``results`` (the content of ``results.json``); ``images``:
        the frames again, RGB ``uint8`` ``[H, W, 3]``, in order. Written to a temporary file, then
        renamed over the old overlay. Returns the number of frames drawn."""
        final_path = self.out_dir / OVERLAY_MP4
        tmp_path = self.out_dir / OVERLAY_RENDERING
        per_sentence = [s["frames"] for s in results["sentences"]]
        count = 0
        try:
            with OverlayVideoWriter(tmp_path, *self.renderer.output_size, self.fps) as video:
                for t, image in enumerate(images):
                    if t >= results["num_frames"]:
                        break
                    masks = [decode_mask_rle(frames[t]["mask_rle"]) for frames in per_sentence]
                    boxes = [frames[t]["box_xyxy"] for frames in per_sentence]  # None: empty mask
                    video.write(self.renderer.draw(image, masks, boxes))
                    count += 1
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        os.replace(tmp_path, final_path)
        return count
