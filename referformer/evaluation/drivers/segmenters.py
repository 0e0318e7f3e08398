"""What the evaluation drivers ask of a model, and the adapter that runs a ReferFormer for them.

Two request kinds, one per family of protocols; any callable answering them can be evaluated (a
real model through :class:`ModelSegmenter`, or a ground-truth "oracle" in tests):

* ``segmenter(VideoRequest) -> iterable of per-sentence mask probabilities``, float ``[T, H, W]``
  in ``[0, 1]`` at the **original** frame size, one entry per sentence in request order. Used by
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
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from referformer.checkpoint import resolve_checkpoint  # noqa: F401 (re-exported)

__all__ = [
    "ClipRequest",
    "ModelSegmenter",
    "QueryPrediction",
    "QuerySegmenter",
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


VideoSegmenter = Callable[[VideoRequest], Iterable[Tensor]]


class QuerySegmenter(Protocol):
    def queries(self, request: ClipRequest) -> list[QueryPrediction]: ...


class ModelSegmenter:
    """Runs a model for the drivers: the video is encoded once per request and decoded for
    the sentences in batches of ``sentence_batch_size``. Any model whose ``decode`` returns
    ``pred_logits`` / ``pred_boxes`` / ``pred_masks`` works: ReferFormer, and RefVOS through its
    one-query view (:func:`referformer.models.refvos.refvos_query_outputs`, masks at the input size).

    Video requests follow ``inference_ytvos.py`` / ``inference_davis.py``: ``Resize(short_side)``
    (no cap unless ``max_size``), one query per request chosen by the mean sigmoid score over its
    frames, its stride-4 mask logits upsampled bilinearly to the original size, then sigmoid.
    Clip requests follow ``engine.evaluate_a2d``: padding to a multiple of 32, the selected frame's
    features, every query's mask logits upsampled x4 bilinearly, thresholded at 0.5, padding
    removed, nearest resize to the original size.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, device: str | torch.device = "cpu",
                 short_side: int = 360, max_size: int | None = None, sentence_batch_size: int = 8,
                 threshold: float = 0.5) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.short_side = short_side
        self.max_size = max_size
        self.sentence_batch_size = sentence_batch_size
        self.threshold = threshold

    def _text(self, sentences: Sequence[str]) -> Any:
        from referformer.text import tokenize

        ids, mask = tokenize(self.tokenizer, list(sentences), device=self.device)
        return self.model.encode_text(ids, mask)

    @torch.inference_mode()
    def __call__(self, request: VideoRequest) -> Iterator[Tensor]:
        """Yield float ``[T, H, W]`` probabilities per sentence (original size, on the CPU)."""
        from referformer.inference.postprocess import select_query, upsample_mask_logits
        from referformer.inference.preprocess import preprocess_frames

        clip, orig_size = preprocess_frames(list(request.frames), short_side=self.short_side,
                                            max_size=self.max_size)
        visual = self.model.encode_video(clip.to(self.device)[None])
        t = clip.shape[0]
        for start in range(0, len(request.sentences), self.sentence_batch_size):
            batch = request.sentences[start:start + self.sentence_batch_size]
            out = self.model.decode(visual, self._text(batch))
            for i in range(len(batch)):
                query, _ = select_query(out["pred_logits"][i])
                logits = upsample_mask_logits(out["pred_masks"][i][torch.arange(t), query].float(), orig_size)
                yield logits.sigmoid().cpu()

    @torch.inference_mode()
    def queries(self, request: ClipRequest) -> list[QueryPrediction]:
        """Every query of ``request.frame_index`` for each sentence (see the class docstring)."""
        from referformer.data.collate import pad_videos
        from referformer.inference.postprocess import cxcywh_to_xyxy_pixels

        frames, padding = pad_videos([request.frames.to(self.device)], size_divisibility=32)
        h, w = request.frames.shape[-2:]
        sizes = torch.tensor([[h, w]], device=self.device)
        visual = self.model.encode_video(frames, padding, sizes).select_frames(torch.tensor([[request.frame_index]]))
        results: list[QueryPrediction] = []
        for start in range(0, len(request.sentences), self.sentence_batch_size):
            batch = request.sentences[start:start + self.sentence_batch_size]
            out = self.model.decode(visual, self._text(batch))
            for i in range(len(batch)):
                scores = out["pred_logits"][i, 0].float().sigmoid().max(-1).values  # [Q]
                # ReferFormer: the original's scale_factor=4 (not the input size: they differ where
                # H or W is not a multiple of 4), then the crop; RefVOS's masks are at the input size
                logits = out["pred_masks"][i, 0][None].float()
                if self.model.mask_stride != 1:
                    logits = F.interpolate(logits, scale_factor=float(self.model.mask_stride), mode="bilinear",
                                           align_corners=False)
                logits = logits[0]
                masks = (logits.sigmoid() > self.threshold)[:, :h, :w]
                masks = F.interpolate(masks[None].float(), size=request.orig_size, mode="nearest")[0] > 0.5
                boxes = cxcywh_to_xyxy_pixels(out["pred_boxes"][i, 0].float(), request.orig_size)
                results.append(QueryPrediction(masks.cpu(), scores.cpu(), boxes.cpu()))
        return results


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def load_segmenter(checkpoint: str | Path, preset: str | None = None, tokenizer: str | Path | None = None,
                   device: str | torch.device = "cpu", sentence_batch_size: int = 8,
                   short_side: int = 360) -> ModelSegmenter:
    """Load a checkpoint (see :func:`resolve_checkpoint`) and its tokenizer into a :class:`ModelSegmenter`.

    ``tokenizer`` defaults to one saved with the checkpoint, else the model config's (``roberta-base``
    from the offline cache).
    """
    from referformer.inference.api import load_model
    from referformer.text import find_tokenizer

    path = resolve_checkpoint(checkpoint)
    model = load_model(path, preset=preset, device=device)
    tok = find_tokenizer(tokenizer, path, model.config.text_encoder.tokenizer)
    return ModelSegmenter(model, tok, device=device, short_side=short_side, sentence_batch_size=sentence_batch_size)
