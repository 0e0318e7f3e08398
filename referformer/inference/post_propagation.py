"""ReferFormer + propagation: the paper's post-process (section 4, Table 5).

For each sentence: select the frame where the referred object's prediction score is highest, then
propagate that frame's predicted mask forward and backward through the whole video with a
semi-supervised VOS model (the paper used CFBI; any :mod:`.propagators` name here). The propagated
masks replace ReferFormer's.

Choices the paper leaves open (docs/propagation.md):

* **score**: the per-frame score of the sentence's chosen query (``SentencePrediction.scores``,
  ``results.json`` ``frames[].score``): the sigmoid class score, max over classes;
* **ties**: the earliest frame among those with the highest score;
* **absent frames**: only frames whose predicted mask is non-empty are candidates (an empty mask
  has nothing to propagate); when every frame's mask is empty, the sentence keeps ReferFormer's
  (empty) result;
* **windows of long videos**: the frame is chosen over *all* frames of the video, whatever the
  window ReferFormer ran in; each sentence is propagated on its own (one object per run, as the
  benchmarks score each expression independently), through the whole video;
* **scores kept**: per-frame scores stay ReferFormer's; boxes become the propagated masks' extents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from referformer.inference.mask_files import decode_mask_rle, encode_mask_rle
from referformer.inference.overlay_output import OVERLAY_MP4, OVERLAY_RENDERING
from referformer.inference.propagation import FramePrompt, PropagationBackend, PropagationSession
from referformer.inference.propagation_output import mask_boxes
from referformer.inference.results_json import RESULTS_JSON, dumps
from referformer.inference.video_io import FrameSource
from referformer.inference.visualize import OverlayRenderer, OverlayVideoWriter
from referformer.inference.writers import DEFAULT_OVERLAY_FPS

__all__ = ["propagate_segmentation", "reference_frame"]


def reference_frame(scores: np.ndarray, has_mask: np.ndarray) -> int | None:
    """The frame to propagate from: the highest ``scores`` ``[T]`` among frames whose mask is not
    empty (``has_mask`` bool ``[T]``), the earliest on ties; ``None`` when every mask is empty.
    Non-finite scores count as the lowest."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    candidates = np.flatnonzero(np.asarray(has_mask, dtype=bool))
    if candidates.size == 0:
        return None
    return int(candidates[np.argmax(scores[candidates])])  # argmax: the first of the maxima


def _rerender(out_dir: Path, results: dict[str, Any], images: Iterable[np.ndarray]) -> None:
    """Draw ``overlay.mp4`` again from ``results`` (as ``OverlayOutput.rerender``, on a closed run)."""
    texts = [s["text"] for s in results["sentences"]]
    renderer = OverlayRenderer(texts, results["width"], results["height"])
    fps = results.get("fps") or DEFAULT_OVERLAY_FPS
    tmp = out_dir / OVERLAY_RENDERING
    try:
        with OverlayVideoWriter(tmp, *renderer.output_size, fps) as video:
            for t, image in enumerate(images):
                if t >= results["num_frames"]:
                    break
                frames = [s["frames"][t] for s in results["sentences"]]
                video.write(renderer.draw(image, [decode_mask_rle(f["mask_rle"]) for f in frames],
                                          [f["box_xyxy"] for f in frames]))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_dir / OVERLAY_MP4)


def propagate_segmentation(out_dir: str | Path, source: FrameSource, backend: PropagationBackend, *,
                           window: int = 8, progress: bool = True) -> list[dict[str, Any]]:
    """Apply the post-process to a finished ``referformer segment`` folder: rewrite each sentence's
    PNG masks and ``results.json`` entries with the propagated masks, and re-draw ``overlay.mp4``.

    ``source``: the same input (re-read). Returns, per sentence, ``{"propagation": {"reference_frame",
    "reference_score", "propagator"} or None (no frame to propagate from), "num_frames_with_mask"}``; the
    ``"propagation"`` entry is also stored in the sentence's ``results.json`` record.
    """
    out_dir = Path(out_dir)
    results = json.loads((out_dir / RESULTS_JSON).read_text(encoding="utf-8"))
    chosen: list[dict[str, Any] | None] = []
    with PropagationSession(backend, source, window=window, spill_dir=out_dir, progress=progress) as session:
        names = session.load()
        for sentence in tqdm(results["sentences"], desc="propagate", unit="sentence", disable=not progress):
            frames = sentence["frames"]
            if [f["frame"] for f in frames] != names:
                raise ValueError(f"{out_dir / RESULTS_JSON} does not hold the frames of the input {source.info.path}")
            scores = np.array([np.nan if f["score"] is None else f["score"] for f in frames])
            has_mask = np.array([f["box_xyxy"] is not None for f in frames])
            ref = reference_frame(scores, has_mask)
            if ref is None:
                chosen.append(None)
                continue
            prompt = FramePrompt(ref, {1: decode_mask_rle(frames[ref]["mask_rle"])})
            mask_dir = out_dir / sentence["mask_dir"] if sentence.get("mask_dir") else None
            for part in session.run([prompt]):
                masks = part.labels == 1
                boxes = mask_boxes(masks)
                for t, (name, mask, box) in enumerate(zip(part.names, masks, boxes)):
                    record = frames[part.start + t]
                    record["mask_rle"] = encode_mask_rle(mask)
                    record["box_xyxy"] = None if np.isnan(box[0]) else [float(v) for v in box]
                    if mask_dir is not None and mask_dir.is_dir():
                        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{name}.png", compress_level=1)
            info = {"propagator": getattr(backend, "name", type(backend).__name__), "reference_frame": names[ref],
                    "reference_score": float(scores[ref])}
            sentence["propagation"] = info
            chosen.append(info)
    results["propagation"] = {"propagator": getattr(backend, "name", type(backend).__name__)}
    tmp = out_dir / (RESULTS_JSON + ".tmp")
    tmp.write_text(dumps(results), encoding="utf-8")
    os.replace(tmp, out_dir / RESULTS_JSON)
    if (out_dir / OVERLAY_MP4).is_file() and any(chosen):
        _rerender(out_dir, results, (f.image for f in source))
    return [{"propagation": info, "num_frames_with_mask": sum(f["box_xyxy"] is not None for f in s["frames"])}
            for info, s in zip(chosen, results["sentences"])]
