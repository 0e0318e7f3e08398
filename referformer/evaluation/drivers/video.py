"""Whole-video benchmarks: Ref-YouTube-VOS, MeViS and the synthetic benchmark.

Per video, every frame goes through the segmenter at once with all the video's sentences (the
original ``inference_ytvos.py``: one query per expression, mask ``sigmoid > 0.5`` at the original
size). Each expression's masks are written as ``<out>/Annotations/<video>/<exp_id>/<frame>.png``
(0/255 'L'); where the split has ground truth, its J and F (means over all frames of the DAVIS
region J and boundary F, as the MeViS evaluator) go into the video's record. Rank 0 then writes

* Ref-YouTube-VOS: ``submission.zip`` with ``Annotations/<video>/<exp_id>/<frame>.png``;
* MeViS: ``submission.zip`` with ``<video>/<exp_id>/<frame>.png`` at the root (MEVIS.md section 9)
  and, for ``valid_u``, ``J&F`` / ``J`` / ``F``;
* synthetic (every split has masks): ``J&F`` / ``J`` / ``F`` and, with labels, per kind groups.

With a tracklets model (a segmenter with ``last_tracklets``) and ground truth, every expression row also
gets ``tracklet_iou`` and the report ``tracklet_recall`` (:func:`_tracklet_recall`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from referformer.data.base import ExpressionVideoDataset, VideoExpression
from referformer.errors import UserError
from referformer.evaluation.drivers.outputs import save_binary_png, write_zip
from referformer.evaluation.drivers.runner import (
    RunContext,
    publish_dir,
    run_units,
    staging_dir,
)
from referformer.evaluation.drivers.segmenters import RefusedSentence, VideoRequest, VideoSegmenter
from referformer.evaluation.measures import boundary_f_measure, region_similarity
from referformer.evaluation.mevis import ExpressionScore, MevisResult

__all__ = ["PREDICTIONS_DIR", "evaluate_videos"]

PREDICTIONS_DIR = "Annotations"
ZIP_LAYOUTS = {"ytvos": "Annotations/", "mevis": ""}  # arcname prefix; None = no zip


def _as_masks(probs: Any, expected: tuple[int, int, int], where: str) -> np.ndarray:
    """Probabilities ``[T, H, W]`` (tensor / array; bool allowed) -> bool masks (``> 0.5``)."""
    array = probs.float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=np.float32)
    if array.shape != expected:
        raise ValueError(f"{where}: the segmenter returned shape {array.shape}, expected {expected} "
                         "(frames, height, width at the original size)")
    return array > 0.5


def _process_video(dataset: ExpressionVideoDataset, segmenter: VideoSegmenter, out_dir: Path, score: bool,
                   video_id: str, expressions: list[VideoExpression]) -> dict[str, Any]:
    frames = dataset.load_frames(expressions[0])
    width, height = frames[0].size
    request = VideoRequest(video_id, expressions[0].frame_names, frames, tuple(e.exp_id for e in expressions),
                           tuple(e.caption for e in expressions))
    staging = staging_dir(out_dir, video_id)
    rows = []
    outputs = iter(segmenter(request))
    for e in expressions:
        probs = next(outputs, None)
        if probs is None:
            raise ValueError(f"video {video_id}: the segmenter returned fewer results than the "
                             f"{len(expressions)} sentences")
        row: dict[str, Any] = {"video": video_id, "expression": e.exp_id}
        if isinstance(probs, RefusedSentence):  # written as empty masks, scored, listed in the report
            row["refused"] = probs.reason
            masks = np.zeros((len(frames), height, width), dtype=bool)
        else:
            masks = _as_masks(probs, (len(frames), height, width), f"video {video_id} expression {e.exp_id}")
        (staging / e.exp_id).mkdir()
        for name, mask in zip(e.frame_names, masks):
            save_binary_png(mask, staging / e.exp_id / f"{name}.png")
        if score:
            gt = dataset.gt_masks(e)
            row["J"] = float(region_similarity(masks, gt).mean())
            row["F"] = float(boundary_f_measure(masks, gt).mean())
        rows.append(row)
    tracklets = getattr(segmenter, "last_tracklets", None)  # a tracklets model's kept tracklets of this video
    if score and tracklets is not None:
        _tracklet_ious(dataset, expressions, rows, tracklets.masks)
    publish_dir(staging, out_dir / PREDICTIONS_DIR / video_id)
    return {"video": video_id, "num_frames": len(frames), "size": [height, width], "expressions": rows}


def evaluate_videos(
    dataset: ExpressionVideoDataset,
    segmenter: VideoSegmenter,
    out_dir: str | Path,
    *,
    benchmark: str,
    score: bool,
    labels: Path | None = None,
    context: RunContext | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run ``segmenter`` over every video of ``dataset``; write PNGs, the zip and the numbers.

    Args:
        benchmark: ``"ytvos"`` (zip with the ``Annotations/`` prefix), ``"mevis"`` (zip without)
            or ``"synthetic"`` (no zip).
        score: compute J / F from ``dataset.gt_masks`` (the split must have ground truth).
        labels: an ``expression_kinds.json`` for the per-kind breakdown (needs ``score``).

    Returns the report dict on rank 0 (None on other ranks).
    """
    out_dir = Path(out_dir)
    context = context or RunContext()
    if labels is not None and not score:
        raise UserError("--labels needs a split with ground-truth masks (per-kind scores need J and F)")
    videos = list(dataset.videos().items())
    if not videos:
        raise UserError(f"{dataset.dataset_name}: the split has no expression to evaluate")
    records = run_units(
        videos, lambda v: v[0],
        lambda v: _process_video(dataset, segmenter, out_dir, score, v[0], v[1]),
        out_dir, context, desc=benchmark, progress=progress,
    )
    if records is None:
        return None
    report: dict[str, Any] = {"num_videos": len(videos), "num_expressions": sum(len(e) for _, e in videos)}
    per_expression = [row for record in records for row in record["expressions"]]
    if score:
        result = MevisResult([ExpressionScore(r["video"], r["expression"], r["J"], r["F"]) for r in per_expression])
        report.update(result.global_metrics())
        if labels is not None:
            report.update(_kinds(per_expression, labels))
        if any("tracklet_iou" in r for r in per_expression):
            report["tracklet_recall"] = _tracklet_recall(per_expression)
    report["outputs"] = {"predictions": str(out_dir / PREDICTIONS_DIR)}
    prefix = ZIP_LAYOUTS.get(benchmark)
    if prefix is not None:
        zip_path = out_dir / "submission.zip"
        entries = [(out_dir / PREDICTIONS_DIR / vid / e.exp_id / f"{name}.png", f"{prefix}{vid}/{e.exp_id}/{name}.png")
                   for vid, exps in videos for e in exps for name in e.frame_names]
        report["outputs"]["zip"] = str(zip_path)
        report["outputs"]["zip_entries"] = write_zip(zip_path, entries)
    report["per_video"] = [{"video": r["video"], "num_frames": r["num_frames"], "num_expressions": len(r["expressions"]),
                            **_video_means(r["expressions"], score)} for r in records]
    report["per_expression"] = per_expression
    refused = [{"video": r["video"], "expression": r["expression"], "reason": r["refused"]}
               for r in per_expression if "refused" in r]
    if refused:  # scored as empty masks; listed so that nobody mistakes them for model failures
        report["refused_expressions"] = refused
    return report


def _video_means(rows: list[dict[str, Any]], score: bool) -> dict[str, float]:
    if not score:
        return {}
    j = float(np.mean([r["J"] for r in rows]))
    f = float(np.mean([r["F"] for r in rows]))
    return {"J&F": (j + f) / 2, "J": j, "F": f}


def _kinds(per_expression: list[dict[str, Any]], labels: Path) -> dict[str, Any]:
    from referformer.evaluation.drivers.kinds import group_scores

    return group_scores(per_expression, labels)


def _tracklet_ious(dataset: ExpressionVideoDataset, expressions: list[VideoExpression], rows: list[dict[str, Any]],
                   masks: torch.Tensor) -> None:
    """Each row's ``tracklet_iou``: the best tracklet-IoU of a kept tracklet (bool ``[P, T, H, W]``) with the
    expression's ground truth (0 without tracklets), and ``referred``: its object ids."""
    from referformer.models.tracklets import tracklet_iou

    for e, row in zip(expressions, rows):
        gt = torch.from_numpy(np.asarray(dataset.gt_masks(e), dtype=bool))
        row["referred"] = ",".join(e.obj_ids) or e.exp_id
        row["tracklet_iou"] = float(tracklet_iou(masks, gt[None]).max()) if len(masks) else 0.0


def _tracklet_recall(rows: list[dict[str, Any]]) -> float:
    """Fraction of referred objects (distinct video and object ids) covered by a kept tracklet with
    tracklet-IoU >= 0.5 (the issue's tracklet recall; it bounds a tracklets model's J&F)."""
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if "tracklet_iou" in r:
            key = (r["video"], r["referred"])
            best[key] = max(best.get(key, 0.0), r["tracklet_iou"])
    return float(np.mean([iou >= 0.5 for iou in best.values()]))
