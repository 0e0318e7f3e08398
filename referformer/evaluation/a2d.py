"""A2D-Sentences / JHMDB-Sentences metrics: P@K, overall and mean IoU, COCO mAP (two protocols).

Numerically equal to ReferFormer's ``engine.evaluate_a2d`` + ``datasets/a2d_eval.py`` (from MTTR);
see ``../shared/reference/METRICS.md`` and ``docs/evaluation.md``:

* per GT image the highest-scoring prediction is used (``sorted(preds, key=score)[-1]``: a stable
  sort, so among tied scores the one that comes *last* in the results list wins);
* ``IoU = (I + 1e-6) / (U + 1e-6)`` in float32 torch arithmetic (we call torch for that step so
  the rounding is the original's), compared with float64 thresholds, strictly greater;
* overall IoU ``ΣI / ΣU`` (no epsilon), mean IoU ``mean(IoU)`` (float64 mean of the float32 IoUs);
* mAP from pycocotools ``COCOeval(iouType="segm")`` with ``useCats = 0``, either with every query
  of every image (the original protocol) or with only the best query per image.

Inputs are COCO dicts: ground truth ``{"images", "annotations"[, "categories"]}`` with exactly one
RLE annotation per image, and results ``[{"image_id", "segmentation": RLE, "score"[,
"category_id"]}]``. Documented deviations (where the original crashes): all unions 0 gives an
overall IoU of 1.0 (the original raises ``ZeroDivisionError``); a GT image without prediction, a
prediction for an unknown image or a mask of the wrong size is a :class:`DatasetFormatError`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from referformer.errors import DatasetFormatError

P_AT_K_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IOU_EPS = 1e-6  # added to intersection and union in float32 (the original's EPS)
COCO_STAT_NAMES = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")  # stats[0:6]


# ---------------------------------------------------------------------------------------------
# per-sample IoU and P@K
# ---------------------------------------------------------------------------------------------
def epsilon_iou(intersection: Sequence[float], union: Sequence[float]) -> np.ndarray:
    """``(I + 1e-6) / (U + 1e-6)`` computed in float32 like the original -> float64 ``[N]``.

    ``intersection`` / ``union`` are pixel counts ``[N]``. Empty vs empty gives 1.0; an empty
    prediction against a non-empty GT gives ``1e-6 / U`` (tiny, not 0). The float32 rounding makes
    exact ratios land irregularly around thresholds (``1/2 -> 0.50000024``, ``8/16 -> 0.5``).
    """
    inter = torch.as_tensor(np.asarray(intersection, dtype=np.float64), dtype=torch.float32)
    uni = torch.as_tensor(np.asarray(union, dtype=np.float64), dtype=torch.float32)
    return ((inter + IOU_EPS) / (uni + IOU_EPS)).double().numpy()


def precision_at_k(
    ious: Sequence[float], thresholds: Iterable[float] = P_AT_K_THRESHOLDS
) -> dict[float, float]:
    """``P@K = #(IoU > K) / N`` (strictly greater) for each threshold ``K``; NaN when ``N = 0``."""
    ious = np.asarray(ious, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: float(np.int64(np.count_nonzero(ious > k)) / len(ious)) for k in thresholds}


def overall_iou(intersection: Sequence[float], union: Sequence[float]) -> float:
    """``ΣI / ΣU`` over all samples, no epsilon. All unions 0 gives 1.0 (the original crashes)."""
    total_inter = 0.0
    total_union = 0.0
    for i, u in zip(intersection, union):  # Python float sums in sample order, as the original
        total_inter += float(i)
        total_union += float(u)
    return 1.0 if total_union == 0 else total_inter / total_union


def mask_intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts ``|P ∧ G|`` and ``|P ∨ G|`` of two ``[H, W]`` masks (non-zero = foreground)."""
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def best_prediction_index(scores: Sequence[float]) -> int:
    """Index of ``sorted(preds, key=score)[-1]``: the highest score, the last one among ties."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])  # stable, like the original
    return order[-1]


# ---------------------------------------------------------------------------------------------
# COCO inputs
# ---------------------------------------------------------------------------------------------
def load_coco_gt(gt: str | Path | dict[str, Any]) -> COCO:
    """Build a pycocotools ``COCO`` from a path or dict; fills ``iscrowd = 0``, ``area`` and
    ``categories`` when absent (pycocotools needs them; the original files carry them).

    Raises :class:`DatasetFormatError` unless every image has exactly one annotation.
    """
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise DatasetFormatError(f"ground-truth file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DatasetFormatError(f"cannot read ground truth {path}: {err}") from err
        where = str(path)
    else:
        data, where = copy.deepcopy(gt), "ground truth"
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetFormatError(
            f"{where} is not a COCO ground-truth file: expected an object with 'images' and "
            "'annotations'"
        )
    data.setdefault("categories", [])
    for ann in data["annotations"]:
        if "segmentation" not in ann or "image_id" not in ann:
            raise DatasetFormatError(
                f"{where}: annotation {ann.get('id', '?')} lacks 'segmentation' or 'image_id'"
            )
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", 1)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for ann in data["annotations"]:
        if "area" not in ann:
            ann["area"] = float(mask_utils.area(coco.annToRLE(ann)))
    for image_id in coco.imgs:
        count = len(coco.imgToAnns.get(image_id, []))
        if count != 1:
            raise DatasetFormatError(
                f"{where}: image {image_id!r} has {count} annotations; the A2D/JHMDB protocol "
                "needs exactly one referred-object annotation per image"
            )
    return coco


def load_predictions(results: str | Path | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read a COCO results list (path or list); checks the keys every entry needs."""
    where = "results"
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise DatasetFormatError(f"results file {path} does not exist")
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DatasetFormatError(f"cannot read results {path}: {err}") from err
        where = str(path)
    if not isinstance(results, list):
        raise DatasetFormatError(
            f"{where} must be a JSON list of {{'image_id', 'segmentation', 'score'}} objects"
        )
    predictions = []
    for k, pred in enumerate(results):
        missing = [key for key in ("image_id", "segmentation", "score") if key not in pred]
        if missing:
            raise DatasetFormatError(f"{where}: entry {k} lacks {', '.join(missing)}")
        seg = pred["segmentation"]
        if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
            raise DatasetFormatError(
                f"{where}: entry {k} (image {pred['image_id']!r}) has no RLE segmentation "
                "({'size': [h, w], 'counts': ...})"
            )
        pred = dict(pred)
        pred.setdefault("category_id", 1)
        if isinstance(seg["counts"], list):  # uncompressed RLE -> compressed, as COCO expects
            pred["segmentation"] = mask_utils.frPyObjects(seg, *seg["size"])
        predictions.append(pred)
    return predictions


# ---------------------------------------------------------------------------------------------
# mAP
# ---------------------------------------------------------------------------------------------
def coco_segm_map(coco_gt: COCO, predictions: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools segm mAP with ``useCats = 0`` -> ``mAP``, ``AP50``, ``AP75``, ``AP_small``,
    ``AP_medium``, ``AP_large`` (``stats[0:6]``; -1 where an area range has no GT)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(p) for p in predictions])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.useCats = 0
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats[:6])}


# ---------------------------------------------------------------------------------------------
# the whole protocol
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleScore:
    """The best prediction of one GT image: its IoU (float32 with epsilon) and pixel counts."""

    image_id: Any
    iou: float
    intersection: int
    union: int
    score: float


@dataclass
class A2DResult:
    """P@K, IoUs, and the COCO numbers of both mAP protocols."""

    samples: list[SampleScore]
    coco_all_queries: dict[str, float]
    coco_best_query: dict[str, float]
    precision: dict[float, float] = field(init=False)
    overall_iou: float = field(init=False)
    mean_iou: float = field(init=False)

    def __post_init__(self) -> None:
        ious = [s.iou for s in self.samples]
        self.precision = precision_at_k(ious)
        self.overall_iou = overall_iou(
            [s.intersection for s in self.samples], [s.union for s in self.samples]
        )
        self.mean_iou = float(np.mean(ious)) if ious else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Flat metrics (``P@0.5`` ... ``P@0.9``, ``overall_iou``, ``mean_iou``, ``mAP`` (all
        queries), ``mAP_best_query``, ``AP50`` ... ``AP_large`` (all queries)), the best-query COCO
        numbers under ``"best_query"`` and ``"per_sample"``."""
        out: dict[str, Any] = {f"P@{k}": v for k, v in self.precision.items()}
        out["overall_iou"] = self.overall_iou
        out["mean_iou"] = self.mean_iou
        out["mAP"] = self.coco_all_queries["mAP"]
        out["mAP_best_query"] = self.coco_best_query["mAP"]
        out.update({k: v for k, v in self.coco_all_queries.items() if k != "mAP"})
        out["best_query"] = dict(self.coco_best_query)
        out["per_sample"] = [
            {
                "image_id": s.image_id,
                "iou": s.iou,
                "intersection": s.intersection,
                "union": s.union,
                "score": s.score,
            }
            for s in self.samples
        ]
        return out


def _decode(rle: dict[str, Any]) -> np.ndarray:
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle)


def evaluate_a2d(
    gt: str | Path | dict[str, Any] | COCO,
    results: str | Path | list[dict[str, Any]],
    *,
    progress: bool = True,
) -> A2DResult:
    """Score COCO-format results against A2D/JHMDB-Sentences ground truth (both mAP protocols).

    Args:
        gt: COCO ground truth (path, dict or ``COCO``), one RLE annotation per image.
        results: COCO results (path or list), one or more entries per GT image (every query).

    Raises :class:`DatasetFormatError` naming GT images without prediction, predictions of
    unknown images, and masks whose size differs from the ground truth.
    """
    from tqdm import tqdm

    coco_gt = gt if isinstance(gt, COCO) else load_coco_gt(gt)
    predictions = load_predictions(results)
    if not predictions:
        raise DatasetFormatError("the results list is empty: every ground-truth image needs one")
    by_image: dict[Any, list[int]] = {}
    for k, pred in enumerate(predictions):
        if pred["image_id"] not in coco_gt.imgs:
            raise DatasetFormatError(
                f"result {k} is for image {pred['image_id']!r}, which is not in the ground truth"
            )
        by_image.setdefault(pred["image_id"], []).append(k)
    missing = [image_id for image_id in coco_gt.imgs if image_id not in by_image]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetFormatError(
            f"{len(missing)} ground-truth image(s) have no prediction: {shown}"
        )

    samples, best_indices = [], []
    for image_id in tqdm(coco_gt.imgs, desc="A2D IoU", unit="img", disable=not progress):
        indices = by_image[image_id]
        best = indices[best_prediction_index([predictions[i]["score"] for i in indices])]
        best_indices.append(best)
        gt_ann = coco_gt.imgToAnns[image_id][0]
        gt_mask = mask_utils.decode(coco_gt.annToRLE(gt_ann))
        pred_mask = _decode(predictions[best]["segmentation"])
        if pred_mask.shape != gt_mask.shape:
            raise DatasetFormatError(
                f"prediction for image {image_id!r} is {pred_mask.shape[1]}x{pred_mask.shape[0]} "
                f"but the ground truth is {gt_mask.shape[1]}x{gt_mask.shape[0]}"
            )
        inter, union = mask_intersection_union(pred_mask, gt_mask)
        samples.append((image_id, inter, union, float(predictions[best]["score"])))
    ious = epsilon_iou([s[1] for s in samples], [s[2] for s in samples])
    sample_scores = [
        SampleScore(image_id, float(iou), inter, union, score)
        for (image_id, inter, union, score), iou in zip(samples, ious)
    ]
    best_only = [predictions[i] for i in sorted(best_indices)]
    return A2DResult(
        samples=sample_scores,
        coco_all_queries=coco_segm_map(coco_gt, predictions),
        coco_best_query=coco_segm_map(coco_gt, best_only),
    )
