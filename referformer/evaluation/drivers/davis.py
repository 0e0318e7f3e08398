"""Ref-DAVIS17: the original ``inference_davis.py`` result folders and their J&F.

Per sequence, expression ``p`` (its position in the sequence's expression list) is object
``k = p // 4`` of annotator / sentence kind ``a = p % 4`` (ids ``4k + a``, DATASETS.md section 2).
The video is cut into clips of 36 frames; per clip and sentence one query (the segmenter's choice
for that request) gives soft scores at the original size; scores ``< 0.5`` are set to 0 and, per
annotator, ``argmax`` over ``[0.1 background, object 1 .. K]`` gives the label map (first maximum
wins, as ``torch.argmax``), saved as palette PNGs ``<out>/anno_<a>/<seq>/<%05d>.png`` with the
palette of ``valid/Annotations/blackswan/00000.png`` (else of the first ground-truth PNG, else VOC).

Scores: each ``anno_<a>`` folder is scored as ``eval_davis.py`` does (DAVIS-2017 unsupervised task
against ``DAVIS/Annotations_unsupervised/480p`` when present, else the converted
``valid/Annotations`` copy, which holds the same files). The original never combines the four
runs; we also report their mean (``J&F``, ``J``, ``F``), labelled as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from referformer.data.base import ExpressionVideoDataset, VideoExpression
from referformer.errors import DatasetFormatError, UserError
from referformer.evaluation.davis import (
    DavisResult,
    ObjectScore,
    evaluate_sequence,
    load_sequence,
    object_statistics,
)
from referformer.evaluation.drivers.outputs import read_palette, save_palette_png
from referformer.evaluation.drivers.runner import (
    RunContext,
    publish_dir,
    run_units,
    staging_dir,
)
from referformer.evaluation.drivers.segmenters import RefusedSentence, VideoRequest, VideoSegmenter

__all__ = ["BACKGROUND_SCORE", "CLIP_LENGTH", "NUM_ANNOTATIONS", "davis_gt_dir", "evaluate_davis"]

CLIP_LENGTH = 36  # frames per model call in inference_davis.py
NUM_ANNOTATIONS = 4  # anno_0..3: annotator 1/2 x first-frame/full-video sentences
BACKGROUND_SCORE = 0.1  # constant background channel of the argmax
SCORE_THRESHOLD = 0.5  # soft scores below this are set to 0


def davis_gt_dir(root: Path, folder: str = "valid") -> Path:
    """Ground truth the original evaluation reads: ``DAVIS/Annotations_unsupervised/480p`` if it is
    there, else the converted copy ``<folder>/Annotations``."""
    raw = root / "DAVIS" / "Annotations_unsupervised" / "480p"
    return raw if raw.is_dir() else root / folder / "Annotations"


def merge_objects(label: np.ndarray, best: np.ndarray, scores: np.ndarray, object_id: int) -> None:
    """One step of ``argmax([0.1, s_1 .. s_K])`` over objects in order, in place.

    ``label`` uint8 / ``best`` float32 ``[t, H, W]`` hold the running argmax and maximum (start:
    0 and 0.1); ``scores`` float ``[t, H, W]`` of object ``object_id`` (scores < 0.5 count as 0).
    Strictly greater replaces, so ties keep the earlier channel (torch.argmax's first maximum).
    """
    scores = np.where(scores < SCORE_THRESHOLD, 0.0, scores).astype(np.float32)
    better = scores > best
    label[better] = object_id
    best[better] = scores[better]


def _process_sequence(dataset: ExpressionVideoDataset, segmenter: VideoSegmenter, out_dir: Path, gt_dir: Path,
                      palette: list[int], clip_length: int, video_id: str,
                      expressions: list[VideoExpression]) -> dict[str, Any]:
    num_objects = len(expressions) // NUM_ANNOTATIONS
    if num_objects == 0:
        raise DatasetFormatError(f"Ref-DAVIS17 sequence {video_id} has {len(expressions)} expressions; "
                                 f"expected {NUM_ANNOTATIONS} per object (ids 4k + a)")
    used = expressions[:num_objects * NUM_ANNOTATIONS]
    frames = dataset.load_frames(used[0])
    width, height = frames[0].size
    length = len(frames)
    labels = np.zeros((NUM_ANNOTATIONS, length, height, width), dtype=np.uint8)
    refused: list[dict[str, str]] = []
    for start in range(0, length, clip_length):
        stop = min(start + clip_length, length)
        best = np.full((NUM_ANNOTATIONS, stop - start, height, width), BACKGROUND_SCORE, dtype=np.float32)
        request = VideoRequest(video_id, used[0].frame_names[start:stop], frames[start:stop],
                               tuple(e.exp_id for e in used), tuple(e.caption for e in used))
        count = 0
        for position, probs in enumerate(segmenter(request)):
            if isinstance(probs, RefusedSentence):  # scored as an empty mask, listed in the record
                refused.append({"expression": used[position].exp_id, "reason": probs.reason})
                probs = np.zeros(best.shape[1:], np.float32)
            scores = probs.float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float32)
            if scores.shape != best.shape[1:]:
                raise ValueError(f"sequence {video_id}: the segmenter returned shape {scores.shape}, expected "
                                 f"{best.shape[1:]}")
            anno, obj = position % NUM_ANNOTATIONS, position // NUM_ANNOTATIONS
            merge_objects(labels[anno, start:stop], best[anno], scores, obj + 1)
            count += 1
        if count != len(used):
            raise ValueError(f"sequence {video_id}: the segmenter returned {count} results for {len(used)} sentences")
    record: dict[str, Any] = {"video": video_id, "num_frames": length, "num_objects": num_objects, "anno": {}}
    if refused:
        record["refused"] = refused
    for anno in range(NUM_ANNOTATIONS):
        staging = staging_dir(out_dir, f"{video_id}.anno_{anno}")
        for t in range(length):
            save_palette_png(labels[anno, t], staging / f"{t:05d}.png", palette)
        publish_dir(staging, out_dir / f"anno_{anno}" / video_id)
        gt, pred = load_sequence(gt_dir, out_dir / f"anno_{anno}", video_id)
        objects = evaluate_sequence(gt, pred, name=video_id)
        record["anno"][str(anno)] = [{"name": o.name, "gt_object": o.gt_object, "pred_object": o.pred_object,
                                      "j": o.j.tolist(), "f": o.f.tolist()} for o in objects]
    return record


def _object(row: dict[str, Any], sequence: str) -> ObjectScore:
    j, f = np.asarray(row["j"], dtype=np.float64), np.asarray(row["f"], dtype=np.float64)
    return ObjectScore(row["name"], sequence, row["gt_object"], row["pred_object"], j, f,
                       object_statistics(j), object_statistics(f))


def evaluate_davis(
    dataset: ExpressionVideoDataset,
    segmenter: VideoSegmenter,
    out_dir: str | Path,
    root: str | Path,
    *,
    clip_length: int = CLIP_LENGTH,
    context: RunContext | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Write ``anno_0..3`` result folders for every sequence of a Ref-DAVIS17 evaluation split and
    score each; returns (rank 0) ``{"anno_0": {J&F-Mean, ..., per_object}, ..., "J&F", "J", "F"}``."""
    out_dir, root = Path(out_dir), Path(root)
    context = context or RunContext()
    gt_dir = davis_gt_dir(root)
    if not gt_dir.is_dir():
        raise DatasetFormatError(f"{gt_dir}: Ref-DAVIS17 ground truth not found (needed to score the results)")
    videos = list(dataset.videos().items())
    if not videos:
        raise UserError("the Ref-DAVIS17 split has no sequence")
    first_gt = sorted((gt_dir / videos[0][0]).glob("*.png"))[:1]
    palette = read_palette([root / "valid" / "Annotations" / "blackswan" / "00000.png", *first_gt])
    records = run_units(
        videos, lambda v: v[0],
        lambda v: _process_sequence(dataset, segmenter, out_dir, gt_dir, palette, clip_length, v[0], v[1]),
        out_dir, context, desc="davis", progress=progress,
    )
    if records is None:
        return None
    report: dict[str, Any] = {"num_videos": len(videos),
                              "num_expressions": sum(r["num_objects"] for r in records) * NUM_ANNOTATIONS}
    means = []
    for anno in range(NUM_ANNOTATIONS):
        objects = [_object(row, r["video"]) for r in records for row in r["anno"][str(anno)]]
        result = DavisResult(objects).to_dict()
        result["results"] = str(out_dir / f"anno_{anno}")
        report[f"anno_{anno}"] = result
        means.append((result["J&F-Mean"], result["J-Mean"], result["F-Mean"]))
    report["J&F"], report["J"], report["F"] = (float(np.mean([m[i] for m in means])) for i in range(3))
    report["note"] = ("anno_0..3 are scored separately like eval_davis.py; J&F / J / F are the mean of the "
                      "four (the original code never combines them)")
    report["per_video"] = [{"video": r["video"], "num_frames": r["num_frames"], "num_objects": r["num_objects"]}
                           for r in records]
    refused = [{"video": r["video"], **row} for r in records for row in r.get("refused", [])]
    if refused:
        report["refused_expressions"] = refused
    return report
