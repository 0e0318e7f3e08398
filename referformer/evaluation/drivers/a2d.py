"""A2D-Sentences / JHMDB-Sentences: the original ``engine.evaluate_a2d`` run and its metrics.

Each test sample is the dataset's evaluation clip (``num_frames`` frames centred on the annotated
frame, clamped to the video; ``RandomResize([360], max_size=640)``); the model sees the whole clip,
keeps the annotated frame, and **every query** of that frame becomes a COCO result
``{"image_id", "category_id": 1, "segmentation": RLE, "score"}`` (mask: x4 bilinear, ``> 0.5``,
padding removed, nearest resize to the original size; METRICS.md). Samples of one video are one
unit of work; samples sharing the same clip share one backbone pass. Rank 0 writes
``<out>/results.json`` (all results, sample order) and scores it with
:func:`referformer.evaluation.a2d.evaluate_a2d` (P@K, IoUs, both mAP protocols).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from referformer.errors import UserError
from referformer.evaluation.a2d import evaluate_a2d
from referformer.evaluation.drivers.runner import (
    RunContext,
    atomic_write_text,
    run_units,
)
from referformer.evaluation.drivers.segmenters import ClipRequest, QuerySegmenter

__all__ = ["GT_FILES", "encode_rle", "evaluate_a2d_split"]

GT_FILES = {
    "a2d": "a2d_sentences_test_annotations_in_coco_format.json",
    "jhmdb": "jhmdb_sentences_gt_annotations_in_coco_format.json",
}


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool ``[H, W]`` -> COCO RLE with ``counts`` as an ASCII string (JSON-able)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _video_of(dataset: Any, index: int) -> str:
    sample = dataset.samples[index]
    return str(sample[1]) if type(dataset).__name__ == "A2DSentences" else str(sample[0])


def _process_video(dataset: Any, segmenter: QuerySegmenter, video_id: str, indices: list[int]) -> dict[str, Any]:
    groups: dict[tuple, list[tuple[int, Any, dict]]] = {}
    for index in indices:
        frames, target = dataset[index]
        key = (tuple(int(i) for i in target["frames_idx"]), int(target["valid_indices"][0]))
        groups.setdefault(key, []).append((index, frames, target))
    results_by_index: dict[int, list[dict[str, Any]]] = {}
    for items in groups.values():
        frames, target = items[0][1], items[0][2]
        request = ClipRequest(video_id, frames, int(target["valid_indices"][0]),
                              tuple(int(s) for s in target["orig_size"]),
                              tuple(t["image_id"] for _, _, t in items), tuple(t["caption"] for _, _, t in items))
        predictions = segmenter.queries(request)
        if len(predictions) != len(items):
            raise ValueError(f"video {video_id}: {len(predictions)} predictions for {len(items)} sentences")
        for (index, _, t), pred in zip(items, predictions):
            masks = pred.masks.cpu().numpy().astype(bool)
            if masks.shape[1:] != request.orig_size:
                raise ValueError(f"sample {t['image_id']}: masks {masks.shape} are not at the original size "
                                 f"{request.orig_size}")
            results_by_index[index] = [
                {"image_id": t["image_id"], "category_id": 1, "segmentation": encode_rle(m), "score": float(s)}
                for m, s in zip(masks, pred.scores.cpu().tolist())
            ]
    return {"video": video_id, "samples": [results_by_index[i] for i in indices], "indices": indices}


def evaluate_a2d_split(
    dataset: Any,
    segmenter: QuerySegmenter,
    out_dir: str | Path,
    gt: str | Path,
    *,
    context: RunContext | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run an A2D / JHMDB evaluation dataset (``A2DSentences`` / ``JHMDBSentences`` test split)
    through ``segmenter.queries``; returns (rank 0) the metrics dict of ``evaluate_a2d`` plus
    ``per_video`` and ``outputs``. ``gt``: the COCO-format ground truth json."""
    out_dir = Path(out_dir)
    context = context or RunContext()
    if len(dataset) == 0:
        raise UserError("the A2D / JHMDB split has no sample")
    by_video: dict[str, list[int]] = {}
    for index in range(len(dataset)):
        by_video.setdefault(_video_of(dataset, index), []).append(index)
    units = list(by_video.items())
    records = run_units(units, lambda u: u[0], lambda u: _process_video(dataset, segmenter, u[0], u[1]),
                        out_dir, context, desc=dataset.__class__.__name__, progress=progress)
    if records is None:
        return None
    by_index = {i: res for r in records for i, res in zip(r["indices"], r["samples"])}
    results = [entry for i in range(len(dataset)) for entry in by_index[i]]
    results_path = out_dir / "results.json"
    atomic_write_text(results_path, json.dumps(results))
    report: dict[str, Any] = {"num_videos": len(units), "num_samples": len(dataset), "num_results": len(results)}
    report.update(evaluate_a2d(gt, results, progress=progress).to_dict())
    report["outputs"] = {"results": str(results_path)}
    report["per_video"] = [{"video": r["video"], "num_samples": len(r["indices"])} for r in records]
    return report
