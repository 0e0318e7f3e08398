"""What the inference engine returns: one sentence's segmentation of one window (handed to the
writers) and of a whole video (:class:`SentencePrediction`, the Python API).

:class:`SentenceWindowResult` is produced by the predictor (``Predictor.stream(...).process``) and
by :meth:`SentenceWindowResult.from_prediction` from the Python API's ``SentencePrediction``; the
writers (:mod:`referformer.inference.writers`) consume it. :data:`SPILL_PREFIX` names the
temporary folders where the predictor spills mask logits (inside the output folder), so that the
output folder's cleaning can recognise those left by a killed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the writers (and the CLI's checks) do not need torch
    from torch import Tensor

SPILL_PREFIX = ".referformer-spill-"  # temporary folders of the predictor's spilled mask logits


@dataclass
class SentenceWindowResult:
    """The segmentation of one sentence on one window of ``T`` frames (what the predictor returns).

    Attributes:
        query: index of the object query chosen for the sentence.
        score: score of that query on the window (the predictor's selection score, in [0, 1]).
        masks: boolean ``[T, H, W]`` at the original frame size (``True`` = the object).
        boxes_xyxy: float ``[T, 4]``, pixels of the original frame, ``x0, y0, x1, y1`` (the box
            head's prediction; meaningless on a frame whose mask is empty).
        frame_scores: float ``[T]``, the chosen query's score on each frame.
        mask_logits: float32 ``[T, H, W]`` upsampled mask logits of the chosen query (only when asked
            for; ``masks == sigmoid(mask_logits) > threshold``).
    """

    query: int
    score: float
    masks: np.ndarray
    boxes_xyxy: np.ndarray
    frame_scores: np.ndarray
    mask_logits: np.ndarray | None = None

    @classmethod
    def from_prediction(cls, prediction: Any) -> SentenceWindowResult:
        """Convert a :class:`referformer.inference.api.SentencePrediction` (torch tensors) of one
        window; the window score is the chosen query's mean score, ``query_scores[query]``."""

        def numpy(value: Any) -> np.ndarray:
            return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

        query = int(prediction.query)
        return cls(
            query=query,
            score=float(numpy(prediction.query_scores)[query]),
            masks=numpy(prediction.masks).astype(bool, copy=False),
            boxes_xyxy=numpy(prediction.boxes).astype(np.float64, copy=False),
            frame_scores=numpy(prediction.scores).astype(np.float64, copy=False),
        )

    def checked(self, num_frames: int, height: int, width: int, what: str = "result") -> SentenceWindowResult:
        """A copy with ``masks`` as boolean ``[T, H, W]`` (``T = num_frames``), ``boxes_xyxy`` as
        float64 ``[T, 4]`` and ``frame_scores`` as float64 ``[T]``; a wrong mask shape raises
        ``ValueError`` naming ``what``."""
        masks = np.asarray(self.masks)
        shape = (num_frames, height, width)
        if masks.shape != shape:
            raise ValueError(f"{what}: expected masks of shape {list(shape)}, got {list(masks.shape)}")
        return SentenceWindowResult(
            query=self.query,
            score=self.score,
            masks=masks if masks.dtype == bool else masks > 0,
            boxes_xyxy=np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(num_frames, 4),
            frame_scores=np.asarray(self.frame_scores, dtype=np.float64).reshape(num_frames),
            mask_logits=self.mask_logits,
        )

    def frames_with_mask(self) -> np.ndarray:
        """Boolean ``[T]``: whether each frame's mask has at least one pixel."""
        return np.asarray(self.masks).reshape(len(self.masks), -1).any(axis=1)


@dataclass
class SentencePrediction:
    """Result for one sentence over a whole video of ``T`` frames.

    Attributes:
        sentence: the normalised sentence.
        masks: bool ``[T, H, W]`` at the original size.
        boxes: float ``[T, 4]`` xyxy pixels of the original frames.
        scores: float ``[T]``, per-frame score of the query that answered the frame.
        query: the chosen query (per-window policy: the one that answered the most frames).
        query_scores: float ``[Q]``, every query's mean sigmoid score over all frames.
        mask_logits: float ``[T, H, W]`` upsampled mask logits (only if requested).
        window_queries: the query of each window, in order.
    """

    sentence: str
    masks: Tensor
    boxes: Tensor
    scores: Tensor
    query: int
    query_scores: Tensor
    mask_logits: Tensor | None = None
    window_queries: list[int] | None = None
