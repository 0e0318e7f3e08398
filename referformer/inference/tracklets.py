"""The top-down tracklet-grounding pipeline over a video: tracklets, grounding, answers.

    from referformer.inference.tracklets import TrackletPredictor
    predictor = TrackletPredictor.from_pretrained("runs/tracklets/model", propagator="runs/ptiny/model")
    predictions = predictor.predict("clip.mp4 frames/", ["the dog on the left", "a red car"])

1. :func:`~.tracklet_building.build_tracklets`: key frames, F_Seg candidates, F_Prop propagation,
   tracklet-NMS (sentence-independent: once per video, whatever the number of sentences);
2. :func:`ground`: the visual encoder on every frame (in chunks of frames), tracklet tokens by
   masked average pooling, the text encoder on the sentences, F_Gnd -> s_p^t per sentence;
3. :func:`answers`: per sentence, the tracklet with the highest mean score; its masks are the answer
   (a :class:`~referformer.inference.results.SentencePrediction`: masks bool ``[T, H, W]``, boxes xyxy,
   ``scores`` = that tracklet's s_p^t, ``query`` = its index, ``query_scores`` = every tracklet's score).

Sentences are independent: each is grounded on its own row of the batch (padding masked), so a
sentence gets the same answer alone or among several. A video where no candidate was found gives
every sentence an empty answer (``query`` 0, ``query_scores`` ``[0.]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from referformer.checkpoint.settings import InferenceSettings
from referformer.inference.device import resolve_device
from referformer.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, FramesInput
from referformer.inference.propagation import PropagationBackend
from referformer.inference.results import SentencePrediction
from referformer.inference.tracklet_building import Tracklets, build_tracklets, video_array
from referformer.models.tracklets import (GroundingOutput, InstanceSegmenter, TrackletGrounder, masked_average_pool,
                                         normalized_boxes)
from referformer.text import find_tokenizer, normalize_sentence, tokenize

__all__ = ["TrackletPredictor", "WINDOW_OPTIONS", "answers", "frame_tokens", "ground", "is_tracklets_model",
           "mask_boxes", "visual_size"]

FRAME_BATCH = 8  # frames per pass of the visual encoder
# Predictor options that mean nothing to the tracklet pipeline (its sizes are in its TrackletsConfig)
WINDOW_OPTIONS = ("short_side", "max_size", "window", "threshold", "query_policy")


def is_tracklets_model(model: Any) -> bool:
    """Whether ``model`` is a :class:`~referformer.models.tracklets.TrackletGrounder` (``model_type`` ``tracklets``)."""
    from referformer.checkpoint.pretrained import model_type_of

    config = getattr(model, "config", None)
    return config is not None and model_type_of(config) == "tracklets"


def visual_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """Size at which the visual encoder sees a ``height x width`` frame: the shorter side resized to
    ``short_side`` (``None``: kept), then each side rounded to a multiple of 32 (at least 32)."""
    if short_side is not None:
        scale = short_side / min(height, width)
        height, width = height * scale, width * scale
    return max(32, int(round(height / 32)) * 32), max(32, int(round(width / 32)) * 32)


def frame_tokens(model: TrackletGrounder, video: np.ndarray, masks: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Tracklet tokens ``[P, T, C]`` and presence ``[P, T]``, the video encoded :data:`FRAME_BATCH` frames at a time."""
    size = visual_size(*video.shape[1:3], model.config.visual_short_side)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    tokens, present = [], []
    for start in range(0, len(video), FRAME_BATCH):
        chunk = torch.from_numpy(np.ascontiguousarray(video[start:start + FRAME_BATCH])).to(device)
        x = chunk.permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if x.shape[-2:] != size else x
        features = model.encode_frames((x - mean) / std)  # [t, C, h, w]
        tok, pres = masked_average_pool(features, masks[:, start:start + FRAME_BATCH].to(device))
        tokens.append(tok)
        present.append(pres)
    return torch.cat(tokens, dim=1), torch.cat(present, dim=1)


@torch.inference_mode()
def ground(model: TrackletGrounder, tracklets: Tracklets, frames: FramesInput, input_ids: Tensor,
           attention_mask: Tensor) -> GroundingOutput:
    """F_Gnd for ``S`` tokenised sentences (``input_ids`` / ``attention_mask`` int64 ``[S, L]``) over the
    ``P >= 1`` tracklets of ``frames`` (the video they were built on) -> :class:`GroundingOutput` with
    ``frame_scores`` ``[S, P, T]`` (s_p^t) and ``scores`` ``[S, P]``, on the model's device."""
    if len(tracklets) == 0:
        raise ValueError("no tracklet to ground: check len(tracklets) first")
    device = next(model.parameters()).device
    video = video_array(frames)
    tokens, present = frame_tokens(model, video, tracklets.masks, device)
    boxes = normalized_boxes(tracklets.masks).to(device) if model.config.motion else None
    words, word_padding = model.encode_text(input_ids.to(device), attention_mask.to(device))
    s = len(words)
    return model(tokens[None].expand(s, -1, -1, -1), words, word_padding, None,
                 present[None].expand(s, -1, -1), None if boxes is None else boxes[None].expand(s, -1, -1, -1))


def mask_boxes(masks: Tensor) -> Tensor:
    """bool ``[T, H, W]`` -> float ``[T, 4]`` xyxy pixel edges of each mask's tight box (``x1`` = last
    column + 1); zeros where the mask is empty."""
    boxes = torch.zeros((len(masks), 4))
    nonempty = masks.flatten(1).any(1)
    if nonempty.any():
        from torchvision.ops import masks_to_boxes

        boxes[nonempty] = masks_to_boxes(masks[nonempty]).float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
    return boxes


def answers(tracklets: Tracklets, grounding: GroundingOutput | None, sentences: Sequence[str]) -> list[SentencePrediction]:
    """One :class:`SentencePrediction` per sentence: the argmax tracklet (ties: the lower index, i.e.
    the higher tracklet score) with its masks, boxes and per-frame scores; ``grounding`` is ``None``
    only when there is no tracklet (empty answers)."""
    num_frames, height, width = tracklets.masks.shape[1:]
    out = []
    for i, sentence in enumerate(sentences):
        if grounding is None or len(tracklets) == 0:
            out.append(SentencePrediction(normalize_sentence(sentence), torch.zeros((num_frames, height, width), dtype=torch.bool),
                                          torch.zeros((num_frames, 4)), torch.zeros(num_frames), 0, torch.zeros(1)))
            continue
        scores = grounding.scores[i].float().cpu()
        p = int(torch.argmax(scores))
        masks = tracklets.masks[p]
        out.append(SentencePrediction(normalize_sentence(sentence), masks, mask_boxes(masks),
                                      grounding.frame_scores[i, p].float().cpu(), p, scores))
    return out


class TrackletPredictor:
    """The whole system on videos: a :class:`TrackletGrounder`, its tokenizer and a propagator.

    Args:
        model: the learned parts (moved to ``device``, eval mode).
        tokenizer: a loaded tokenizer of the model's text encoder.
        propagator: F_Prop, a :class:`PropagationBackend` (e.g. from ``load_propagator``).
        device: where the model runs (``"auto"`` accepted).
        segmenter: F_Seg, any :class:`~referformer.models.tracklets.InstanceSegmenter` (default: the
            model's Mask R-CNN with its config's thresholds).
    """

    def __init__(self, model: TrackletGrounder, tokenizer: Any, propagator: PropagationBackend,
                 device: str | torch.device = "cpu", segmenter: InstanceSegmenter | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.propagator = tokenizer, propagator
        self.segmenter = segmenter if segmenter is not None else self.model.instance_segmenter()
        # what callers of Predictor read (segment's window, evaluate's report): the folder's settings
        self.settings = getattr(model, "inference_settings", None) or InferenceSettings()
        self.last_tracklets: Tracklets | None = None  # of the last predict() call (tracklet recall)

    @classmethod
    def for_model(cls, model: TrackletGrounder, tokenizer: Any = None,
                  propagator: str | Path | PropagationBackend | None = None, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype = "fp32", **options: Any) -> TrackletPredictor:
        """A predictor for a loaded model: ``tokenizer`` loaded, a folder or None (the one saved with the
        model's folder, else its text config's); ``propagator`` a backend or a name for
        :func:`~referformer.inference.propagators.load_propagator` (default: the config's). ``options``:
        ``Predictor``'s; its window options (``short_side``, ``window``, ``threshold``, ``query_policy``,
        ``max_size``) must be unset (None): the pipeline has its config's sizes; ``sentence_batch_size``
        and ``compile`` are ignored. fp32 only."""
        from referformer.errors import UserError
        from referformer.inference.propagators import load_propagator

        given = sorted(k for k in WINDOW_OPTIONS if options.get(k) is not None)
        if given:
            raise UserError(f"{', '.join(given)} do(es) not apply to a tracklets model: it grounds whole videos "
                            "at the sizes of its config (visual_short_side, segmenter.min_size)")
        unknown = sorted(set(options) - set(WINDOW_OPTIONS) - {"sentence_batch_size", "compile"})
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}")
        if dtype not in ("fp32", torch.float32):
            raise UserError("a tracklets model runs in fp32 only (--dtype fp32)")
        tok = find_tokenizer(tokenizer, getattr(model, "checkpoint_path", None), model.config.text_encoder.tokenizer)
        if propagator is None or isinstance(propagator, (str, Path)):
            propagator = load_propagator(propagator or model.config.propagator, device)
        return cls(model, tok, propagator, device)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, propagator: str | Path | PropagationBackend | None = None,
                        tokenizer: Any = None, device: str | torch.device = "cpu") -> TrackletPredictor:
        """Load a ``tracklets`` model folder (or bundled name); ``propagator``: a backend or a name for
        :func:`~referformer.inference.propagators.load_propagator` (default: the config's)."""
        from referformer.checkpoint import load_model
        from referformer.checkpoint.pretrained import model_type_of
        from referformer.errors import UserError

        model = load_model(name_or_path)
        if model_type_of(model.config) != "tracklets":
            raise UserError(f"{name_or_path} is not a tracklets model (model_type "
                            f"{model_type_of(model.config)!r})")
        return cls.for_model(model, tokenizer, propagator, device)

    def check_sentences(self, sentences: str | Sequence[str]) -> list[list[int]]:
        """Token ids of every sentence; ``UserError`` for an empty one, ``SentenceTooLongError`` for one
        longer than the text encoder takes (as ``Predictor.check_sentences``)."""
        from referformer.inference.sentences import tokenize_sentences

        return tokenize_sentences(self.tokenizer, sentences, self.model.config.text_encoder.max_tokens)

    def stream(self, sentences: Sequence[str], *, spill_dir: str | Path | None = None) -> Any:
        """``segment``'s window protocol (:class:`~referformer.inference.engines.TrackletStream`)."""
        from referformer.inference.tracklet_stream import TrackletStream

        return TrackletStream(self, sentences)

    def tracklets(self, frames: FramesInput) -> Tracklets:
        """The video's tracklets (sentence-independent; reuse them for several calls of :meth:`ground_sentences`)."""
        c = self.model.config
        return build_tracklets(frames, self.segmenter, self.propagator, c.num_key_frames,
                               c.max_tracklets, c.nms_iou)

    def ground_sentences(self, frames: FramesInput, tracklets: Tracklets, sentences: Sequence[str]) -> list[SentencePrediction]:
        """Ground ``sentences`` on already built ``tracklets`` of ``frames``."""
        if isinstance(sentences, str):
            sentences = [sentences]
        if len(tracklets) == 0:
            return answers(tracklets, None, sentences)
        input_ids, attention_mask = tokenize(self.tokenizer, sentences)
        return answers(tracklets, ground(self.model, tracklets, frames, input_ids, attention_mask), sentences)

    def predict(self, frames: FramesInput, sentences: Sequence[str], **ignored: Any) -> list[SentencePrediction]:
        """Tracklets of ``frames`` then one answer per sentence (``mask_logits`` None). ``Predictor``'s
        ``window`` / ``return_logits`` / ``progress`` are accepted and ignored: the whole video is one unit."""
        video = video_array(frames)
        self.last_tracklets = self.tracklets(video)
        return self.ground_sentences(video, self.last_tracklets, sentences)
