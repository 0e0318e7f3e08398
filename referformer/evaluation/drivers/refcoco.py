"""RefCOCO / RefCOCO+ / RefCOCOg validation with T = 1 (one image per sentence).

Each sentence's image goes through the evaluation transform (``RandomResize([360], max_size=640)``)
as a one-frame clip; the best-scoring query (``sorted(..., key=score)[-1]``, as A2D) gives the box
and the mask (mask post-processing of A2D, box = normalised cxcywh scaled to the original size).
Numbers (:mod:`referformer.evaluation.refcoco`): REC ``P@0.5`` from box IoU, RIS ``P@0.5..0.9``,
``overall_iou`` and ``mean_iou`` from mask IoU. The box convention (continuous xyxy, no ``+1``) is
our assumption, as documented in ``docs/evaluation.md``. Images are the units of work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from referformer.errors import UserError
from referformer.evaluation.a2d import (
    best_prediction_index,
    epsilon_iou,
    mask_intersection_union,
    overall_iou,
    precision_at_k,
)
from referformer.evaluation.drivers.runner import RunContext, run_units
from referformer.evaluation.drivers.segmenters import ClipRequest, QuerySegmenter
from referformer.evaluation.refcoco import box_intersection_union

__all__ = ["evaluate_refcoco_split"]


def _process_image(dataset: Any, segmenter: QuerySegmenter, image_key: str, indices: list[int]) -> dict[str, Any]:
    rows = []
    for index in indices:
        frames, target = dataset[index]
        _, original = dataset.read_image_target(index)
        gt_mask = original["masks"][0].numpy()
        gt_box = original["boxes"][0].tolist()
        orig_size = tuple(int(s) for s in target["orig_size"])
        request = ClipRequest(image_key, frames, 0, orig_size, (target["image_id"],), (target["caption"],))
        pred = segmenter.queries(request)[0]
        best = best_prediction_index(pred.scores.tolist())
        inter, union = mask_intersection_union(pred.masks[best].numpy(), gt_mask)
        box = pred.boxes[best].tolist() if pred.boxes is not None else [0.0, 0.0, 0.0, 0.0]
        rows.append({"sample": target["image_id"], "caption": target["caption"], "score": float(pred.scores[best]),
                     "intersection": inter, "union": union, "box": box, "gt_box": gt_box})
    return {"image": image_key, "indices": indices, "samples": rows}


def evaluate_refcoco_split(
    dataset: Any,
    segmenter: QuerySegmenter,
    out_dir: str | Path,
    *,
    context: RunContext | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Evaluate a ``RefExpImages`` split; returns (rank 0) REC / RIS numbers and ``per_sample`` rows."""
    if len(dataset) == 0:
        raise UserError("the RefCOCO split has no sentence")
    context = context or RunContext()
    by_image: dict[str, list[int]] = {}
    for index, info in enumerate(dataset.images):
        by_image.setdefault(str(info.get("original_id", info["id"])), []).append(index)
    units = list(by_image.items())
    records = run_units(units, lambda u: f"image-{u[0]}", lambda u: _process_image(dataset, segmenter, u[0], u[1]),
                        Path(out_dir), context, desc="refcoco", progress=progress)
    if records is None:
        return None
    by_index = {i: row for r in records for i, row in zip(r["indices"], r["samples"])}
    rows = [by_index[i] for i in range(len(dataset))]
    inter, union = box_intersection_union(np.array([r["box"] for r in rows]), np.array([r["gt_box"] for r in rows]))
    box_iou = epsilon_iou(inter, union)
    mask_iou = epsilon_iou([r["intersection"] for r in rows], [r["union"] for r in rows])
    for row, b, m in zip(rows, box_iou, mask_iou):
        row["box_iou"], row["mask_iou"] = float(b), float(m)
    report: dict[str, Any] = {"num_images": len(units), "num_samples": len(rows),
                              "REC_P@0.5": precision_at_k(box_iou, (0.5,))[0.5]}
    report.update({f"P@{k}": v for k, v in precision_at_k(mask_iou).items()})
    report["overall_iou"] = overall_iou([r["intersection"] for r in rows], [r["union"] for r in rows])
    report["mean_iou"] = float(np.mean(mask_iou))
    report["per_sample"] = rows
    return report
