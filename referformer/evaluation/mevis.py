"""MeViS ``valid_u`` offline evaluation: J, F and J&F averaged over expressions.

Numerically equal to MeViS ``tools/eval_mevis.py`` (``../shared/reference/formats/MEVIS.md`` §8):
per expression, J and F are averaged over **all** frames of its video (DAVIS per-frame measures,
no void), then ``J = mean_e J_e``, ``F = mean_e F_e``, ``J&F = (J + F) / 2``. Prediction PNGs are
read with ``cv2.IMREAD_GRAYSCALE`` and any non-zero pixel is foreground; the ground truth of a frame
is the union of the expression's ``anno_id`` masks in ``mask_dict.json`` (``null`` = absent).

Deviation (documented): where the official script silently drops or zeroes an expression (missing
video/expression folder or frame PNG, a PNG of the wrong size), we raise
:class:`DatasetFormatError` naming the file. ``missing="zero"`` reproduces the official ``[0, 0]``
for a missing *video* folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from referformer.errors import DatasetFormatError
from referformer.evaluation.measures import BOUND_TH, boundary_f_measure, region_similarity


@dataclass(frozen=True)
class ExpressionScore:
    """``J_e`` and ``F_e`` of one expression (means over all frames of its video)."""

    video: str
    expression: str
    j: float
    f: float

    @property
    def name(self) -> str:
        """``<video>_<exp_id>``, the key of the official results json."""
        return f"{self.video}_{self.expression}"


@dataclass
class MevisResult:
    """Per-expression scores and their means."""

    expressions: list[ExpressionScore]

    def global_metrics(self) -> dict[str, float]:
        """``J&F``, ``J``, ``F``: means over expressions (NaN if there is none)."""
        if not self.expressions:
            nan = float("nan")
            return {"J&F": nan, "J": nan, "F": nan}
        j = float(np.mean([e.j for e in self.expressions]))
        f = float(np.mean([e.f for e in self.expressions]))
        return {"J&F": (j + f) / 2, "J": j, "F": f}

    def to_dict(self) -> dict[str, Any]:
        """Global metrics plus ``"per_expression"`` (``name``, ``video``, ``expression``, J, F)."""
        return {
            **self.global_metrics(),
            "per_expression": [
                {"name": e.name, "video": e.video, "expression": e.expression, "J": e.j, "F": e.f}
                for e in self.expressions
            ],
        }


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetFormatError(f"{path} does not exist (expected in the MeViS valid_u folder)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetFormatError(f"cannot read {path}: {err}") from err


def _read_prediction(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetFormatError(
            f"prediction {path} is missing: every frame of every expression needs "
            "<pred>/<video>/<exp_id>/<frame>.png"
        )
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetFormatError(f"cannot read prediction {path} as an image")
    return image


def expression_ground_truth(
    mask_dict: dict[str, list[Any]], anno_ids: list[Any], num_frames: int, size: tuple[int, int]
) -> np.ndarray:
    """Union of the referred objects' masks -> uint8 ``[T, H, W]`` (>0 = foreground).

    ``size`` = ``(H, W)``; ``null`` entries (object absent) are skipped. Sums like the official
    code (overlaps hold 2); every consumer binarises.
    """
    gt = np.zeros((num_frames, *size), dtype=np.uint8)
    for anno_id in anno_ids:
        key = str(anno_id)
        if key not in mask_dict:
            raise DatasetFormatError(f"mask_dict.json has no entry for anno_id {key}")
        track = mask_dict[key]
        for t in range(num_frames):
            rle = track[t] if t < len(track) else None
            if rle:
                mask = mask_utils.decode(rle)
                if mask.shape != gt.shape[1:]:
                    raise DatasetFormatError(
                        f"the ground truth (mask_dict.json anno_id {key}, frame {t}) is "
                        f"{mask.shape[1]}x{mask.shape[0]} but the prediction is "
                        f"{size[1]}x{size[0]}; write PNGs at the original frame size"
                    )
                gt[t] += mask
    return gt


def evaluate_mevis(
    valid_u_dir: str | Path,
    pred_dir: str | Path,
    *,
    missing: Literal["error", "zero"] = "error",
    bound_th: float = BOUND_TH,
    progress: bool = True,
) -> MevisResult:
    """Score ``pred_dir/<video>/<exp_id>/<frame>.png`` against a MeViS ``valid_u`` folder.

    Args:
        valid_u_dir: folder holding ``meta_expressions.json`` and ``mask_dict.json``.
        pred_dir: prediction root, one PNG per frame per expression (0 background, >0 object).
        missing: ``"error"`` (default) stops at a missing video folder; ``"zero"`` scores its
            expressions ``[0, 0]`` like the official script. Missing expression folders or frames
            and mis-sized PNGs are always errors.
    """
    from tqdm import tqdm

    valid_u_dir, pred_dir = Path(valid_u_dir), Path(pred_dir)
    if not valid_u_dir.is_dir():
        raise DatasetFormatError(f"MeViS folder {valid_u_dir} does not exist")
    if not pred_dir.is_dir():
        raise DatasetFormatError(f"prediction folder {pred_dir} does not exist")
    meta = _read_json(valid_u_dir / "meta_expressions.json")
    mask_dict = _read_json(valid_u_dir / "mask_dict.json")
    try:
        videos = meta["videos"]
    except (KeyError, TypeError) as err:
        raise DatasetFormatError(
            f"{valid_u_dir / 'meta_expressions.json'} has no 'videos' object"
        ) from err
    jobs = [(v, e) for v, video in videos.items() for e in video["expressions"]]
    scores = []
    for video_id, exp_id in tqdm(jobs, desc="MeViS", unit="exp", disable=not progress):
        video = videos[video_id]
        if not (pred_dir / video_id).is_dir():
            if missing == "zero":
                scores.append(ExpressionScore(video_id, exp_id, 0.0, 0.0))
                continue
            raise DatasetFormatError(
                f"prediction folder {pred_dir / video_id} is missing (video {video_id} of "
                "meta_expressions.json)"
            )
        exp_dir = pred_dir / video_id / exp_id
        if not exp_dir.is_dir():
            raise DatasetFormatError(
                f"prediction folder {exp_dir} is missing (expression {exp_id} of video {video_id})"
            )
        frames = video["frames"]
        first = _read_prediction(exp_dir / f"{frames[0]}.png")  # official: 00000.png sizes all
        pred = np.zeros((len(frames), *first.shape), dtype=np.uint8)
        for t, frame in enumerate(frames):
            image = _read_prediction(exp_dir / f"{frame}.png")
            if image.shape != first.shape:
                raise DatasetFormatError(
                    f"prediction {exp_dir / f'{frame}.png'} is {image.shape[1]}x{image.shape[0]}, "
                    f"{frames[0]}.png is {first.shape[1]}x{first.shape[0]}"
                )
            pred[t] = image
        anno_ids = video["expressions"][exp_id].get("anno_id", [])
        try:
            gt = expression_ground_truth(mask_dict, anno_ids, len(frames), first.shape)
        except DatasetFormatError as err:
            raise DatasetFormatError(f"predictions in {exp_dir}: {err}") from err
        j = float(region_similarity(pred, gt).mean())
        f = float(boundary_f_measure(pred, gt, bound_th=bound_th).mean())
        scores.append(ExpressionScore(video_id, exp_id, j, f))
    return MevisResult(scores)
