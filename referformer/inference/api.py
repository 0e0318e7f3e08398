"""``segment_video``: frames + sentences in, per-sentence masks / boxes / scores out, in one call.

    from referformer import load_model, segment_video
    model = load_model("synthetic-tiny")                  # a bundled name, a folder or an official .pth
    results = segment_video(model, "video/frames/", ["a dog holding a white umbrella"])
    results[0].masks  # bool [T, H, W] at the original resolution

A thin caller of the one engine (:class:`referformer.inference.predictor.Predictor`): the whole
clip goes through the model at once (the original ``inference_ytvos.py``; a model whose settings fix
a window, like ``synthetic-tiny``, is run in those windows), at the model's inference settings
unless an argument overrides one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from referformer.errors import UserError
from referformer.inference.predictor import Predictor
from referformer.inference.preprocess import FramesInput, load_frames
from referformer.inference.results import SentencePrediction
from referformer.text import find_tokenizer

__all__ = ["SentencePrediction", "segment_video"]


def segment_video(model: nn.Module, frames: FramesInput, sentences: str | Sequence[str], tokenizer: Any = None,
                  threshold: float | None = None, short_side: int | None = None, max_size: int | None = None,
                  sentence_batch_size: int = 4, return_logits: bool = False,
                  query_policy: str | None = None) -> list[SentencePrediction]:
    """Segment the object each sentence refers to in every frame, the frames as one clip (the
    original ``inference_ytvos.py``) unless the model's inference settings fix a window. A ``tracklets``
    model runs :class:`~referformer.inference.tracklets.TrackletPredictor` (its config's propagator).

    frames: a folder of images, a list of PIL images / HxWx3 uint8 arrays / tensors, or a [T, H, W, 3]
    array; sentences: one or more referring expressions (lower-cased and whitespace-normalised like
    the original); tokenizer: a loaded tokenizer, a folder, or None for the one the model's
    settings / checkpoint folder / text config name. ``threshold``, ``short_side``, ``max_size``,
    ``query_policy``: override the model's inference settings. Runs where the model's weights are.
    """
    images = load_frames(frames)
    from referformer.inference.engines import is_tracklets_model, predictor_for

    if is_tracklets_model(model):  # whole-video tracklet grounding; its propagator comes from its config
        if return_logits:
            raise UserError("a tracklets model gives masks, not mask logits (return_logits=False)")
        predictor = predictor_for(model, tokenizer, next(model.parameters()).device, threshold=threshold,
                                  short_side=short_side, max_size=max_size, query_policy=query_policy)
        return predictor.predict(images, sentences)
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        settings = getattr(model, "inference_settings", None)
        default = (settings.tokenizer if settings is not None else None) or model.config.text_encoder.tokenizer
        tokenizer = find_tokenizer(tokenizer, getattr(model, "checkpoint_path", None), default)
    device = next(model.parameters()).device
    predictor = Predictor(model, tokenizer, device=device, sentence_batch_size=sentence_batch_size,
                          threshold=threshold, short_side=short_side, max_size=max_size, query_policy=query_policy)
    window = predictor.settings.window or len(images)
    return predictor.predict(images, sentences, window=window, return_logits=return_logits)
