"""What the evaluation drivers ask of a model, and the adapter that runs a ReferFormer for them.

Two request kinds, one per family of protocols; any callable answering them can be evaluated (a
real model through :class:`ModelSegmenter`, or a ground-truth "oracle" in tests):

* ``segmenter(VideoRequest) -> iterable of per-sentence mask probabilities``, float ``[T, H, W]``
  in ``[0, 1]`` at the **original** frame size, one entry per sentence in request order (or a
  :class:`RefusedSentence` for a sentence the model cannot take). Used by
  Ref-YouTube-VOS, MeViS, the synthetic benchmark (``> 0.5`` = object) and Ref-DAVIS17 (the soft
  scores are merged over objects). One query is chosen per request, so the driver's window (whole
  video, or 36-frame clips for DAVIS) is the original's "query per clip".
* ``segmenter.queries(ClipRequest) -> list[QueryPrediction]``: every query of one frame of a clip
  (A2D-Sentences / JHMDB-Sentences, and RefCOCO with ``T = 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor

from referformer.checkpoint import resolve_checkpoint  # noqa: F401 (re-exported)
from referformer.inference.engines import load_predictor
from referformer.inference.predictor import Predictor
from referformer.inference.sentences import SentenceTooLongError

__all__ = [
    "ClipRequest",
    "ModelSegmenter",
    "QueryPrediction",
    "QuerySegmenter",
    "RefusedSentence",
    "VideoRequest",
    "VideoSegmenter",
    "load_segmenter",
    "resolve_checkpoint",
]


@dataclass(frozen=True)
class VideoRequest:
    """Frames of one video (or one clip of it) and the sentences to segment in them.

    ``frames``: RGB PIL images at the original size, in order; ``frame_names``: their file stems;
    ``sentences``: cleaned captions; ``exp_ids``: the matching expression ids (for oracles / logs).
    """

    video_id: str
    frame_names: tuple[str, ...]
    frames: Sequence[Image.Image]
    exp_ids: tuple[str, ...]
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class ClipRequest:
    """One clip, already transformed as the dataset's evaluation loader does, and its sentences.

    ``frames``: ImageNet-normalised float32 ``[T, 3, h, w]`` (unpadded); ``frame_index``: position of
    the frame to predict (A2D/JHMDB annotated frame; 0 for RefCOCO); ``orig_size``: ``(H, W)`` pixels
    of the original frame; ``sample_ids``: one id per sentence (COCO image ids).
    """

    video_id: str
    frames: Tensor
    frame_index: int
    orig_size: tuple[int, int]
    sample_ids: tuple[Any, ...]
    sentences: tuple[str, ...]


@dataclass
class QueryPrediction:
    """Every query of one sentence at one frame: ``masks`` bool ``[Q, H, W]`` (original size),
    ``scores`` float ``[Q]`` (sigmoid of the class logit, max over classes), ``boxes`` float
    ``[Q, 4]`` xyxy pixels of the original frame (None if the segmenter has no boxes)."""

    masks: Tensor
    scores: Tensor
    boxes: Tensor | None = None


@dataclass(frozen=True)
class RefusedSentence:
    """What a segmenter yields instead of probabilities for a sentence the model cannot take (too
    long for its text encoder): the driver writes empty masks, scores them, and lists the
    expression with ``reason`` in the report instead of stopping the run."""

    reason: str


VideoSegmenter = Callable[[VideoRequest], Iterable["Tensor | RefusedSentence"]]


class QuerySegmenter(Protocol):
    def queries(self, request: ClipRequest) -> list[QueryPrediction]: ...


class ModelSegmenter:
    """Runs the inference engine (:class:`~referformer.inference.predictor.Predictor`) for the drivers.

    Video requests: the request's frames go through ``Predictor.predict`` with the model's inference
    settings (short side, threshold, query policy). ``window`` frames per clip: the argument, else
    the settings' window, else the whole request, so for the official checkpoints each request is
    one clip as the original's ``inference_ytvos.py`` (whole video) / ``inference_davis.py`` (the
    driver's 36-frame clips) and the chosen query is the original's "query per clip". The chosen
    query's upsampled mask logits go through a sigmoid. Clip requests: ``Predictor.frame_queries``
    (the original ``engine.evaluate_a2d``). A sentence longer than the text encoder accepts is
    answered with a :class:`RefusedSentence`.
    """

    def __init__(self, predictor: Predictor, window: int | None = None) -> None:
        self.predictor = predictor
        self.window = window

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    def __call__(self, request: VideoRequest) -> Iterator[Tensor | RefusedSentence]:
        """Yield float ``[T, H, W]`` probabilities per sentence (original size, on the CPU)."""
        accepted, refused = self._check(request.sentences)
        window = self.window or self.predictor.settings.window or len(request.frames)
        predictions = iter(self.predictor.predict(list(request.frames), [request.sentences[i] for i in accepted],
                                                  window=window, return_logits=True) if accepted else [])
        for i in range(len(request.sentences)):
            if i in refused:
                yield refused[i]
            else:
                prediction = next(predictions)
                if prediction.mask_logits is None:  # a tracklets model: its masks are final (no logits)
                    yield prediction.masks.float()
                else:
                    yield prediction.mask_logits.sigmoid()

    def _check(self, sentences: Sequence[str]) -> tuple[list[int], dict[int, RefusedSentence]]:
        accepted, refused = [], {}
        for i, sentence in enumerate(sentences):
            try:
                self.predictor.check_sentences([sentence])
            except SentenceTooLongError as err:
                refused[i] = RefusedSentence(str(err).replace("sentence 1 ", "the expression ", 1))
            else:
                accepted.append(i)
        return accepted, refused

    @property
    def last_tracklets(self) -> Any:
        """A tracklets model's kept tracklets of the last video request (``masks`` bool ``[P, T, H, W]``),
        for the tracklet recall; None for other models."""
        return getattr(self.predictor, "last_tracklets", None)

    def queries(self, request: ClipRequest) -> list[QueryPrediction]:
        """Every query of ``request.frame_index`` for each sentence (``Predictor.frame_queries``)."""
        if not hasattr(self.predictor, "frame_queries"):
            from referformer.errors import UserError

            raise UserError("this model grounds whole videos (tracklets): the per-frame protocols (a2d, jhmdb, "
                            "refcoco) need ReferFormer or RefVOS")
        results = self.predictor.frame_queries(request.frames, request.frame_index, request.orig_size,
                                               list(request.sentences))
        return [QueryPrediction(masks, scores, boxes) for masks, scores, boxes in results]


def load_segmenter(checkpoint: str | Path, preset: str | None = None, tokenizer: str | Path | None = None,
                   device: str | torch.device = "cpu", sentence_batch_size: int = 8, window: int | None = None,
                   **overrides: Any) -> ModelSegmenter:
    """A :class:`ModelSegmenter` over ``engines.load_predictor(checkpoint, ...)`` (a ``TrackletPredictor``
    for a tracklets folder); ``overrides`` change the model's inference settings (``short_side``,
    ``threshold``, ``query_policy``...)."""
    predictor = load_predictor(checkpoint, preset, tokenizer=tokenizer, device=device,
                               sentence_batch_size=sentence_batch_size, **overrides)
    return ModelSegmenter(predictor, window=window)
