"""The per-sentence result of a clip's post-processing, shared by every model's post-processing.

ReferFormer's (:func:`referformer.inference.postprocess.postprocess_clip`) and RefVOS's
(:func:`referformer.models.refvos.postprocess_refvos_clip`) both return a :class:`ClipPrediction`,
so the writers, the evaluation and the Predictor read one type whatever the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["ClipPrediction"]


@dataclass
class ClipPrediction:
    """Result for one sentence over one clip.

    masks: bool [T, H, W] at the original size; mask_logits: float [T, H, W] (before the threshold);
    boxes: [T, 4] xyxy in original-size pixels; scores: [T] sigmoid score of the chosen query per frame
    (max over classes); query_scores: [Q]; query: chosen query index; logits: [T, K]; boxes_cxcywh:
    [T, 4] normalised; reference_points: [T, 2] normalised (x, y) fed to the last decoder layer.
    """

    masks: Tensor
    mask_logits: Tensor
    boxes: Tensor
    scores: Tensor
    query_scores: Tensor
    query: int
    logits: Tensor
    boxes_cxcywh: Tensor
    reference_points: Tensor | None
