"""The ``Predictor``: the one inference engine. Every entry point that turns frames and sentences
into per-sentence results calls it (``referformer segment``, ``evaluate``, ``demo``,
:func:`referformer.segment_video`, the synthetic scoring).

    from referformer import Predictor
    predictor = Predictor.from_pretrained("synthetic-tiny")      # a bundled name, a folder, an official .pth
    results = predictor.predict("clip.mp4", ["a man riding a bike", "the dog"])
    results[0].masks        # bool [T, H, W] at the original size

How a video flows (one window = ``settings.window`` consecutive frames):

1. each window is resized (PIL, short side ``settings.short_side``), ImageNet-normalised and
   encoded ONCE (``encode_video``): the visual backbone is shared by all sentences;
2. the sentences are tokenised and encoded once per video (:mod:`.sentences`), and the
   sentence-dependent part (``decode``) runs batched over them;
3. a query answers each sentence under the model's query policy (:mod:`.stream`): per video (the
   original) or per window;
4. the chosen query's stride-4 mask logits are upsampled bilinearly to the original size and
   thresholded (``settings.threshold``).

The settings come with the model (``config.json`` ``"inference"``, see
:mod:`referformer.checkpoint.settings`); a keyword argument overrides one. A video that fits in
one window gives exactly the original's ``inference_ytvos.py`` on it. Longer videos differ from the
original in what windowing implies: the CM-FPN's temporal self-attention and a Video-Swin backbone
only see frames of the same window (see docs/segment.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from referformer.checkpoint import load_model
from referformer.checkpoint.settings import ORIGINAL_SETTINGS, InferenceSettings
from referformer.data.collate import pad_videos
from referformer.errors import UserError
from referformer.inference.device import autocast, resolve_device, resolve_dtype
from referformer.inference.postprocess import cxcywh_to_xyxy_pixels
from referformer.inference.preprocess import FramesInput, load_frames
from referformer.inference.results import SentencePrediction, SentenceWindowResult
from referformer.inference.sentences import encode_token_batches, tokenize_sentences
from referformer.inference.stream import QueryChoice, SegmentationStream, WindowCorrection
from referformer.inference.video_io import Frame, FrameSource, FrameWindow, iter_windows, open_source
from referformer.models.compiling import compile_model
from referformer.text import find_tokenizer, normalize_sentence

__all__ = ["Predictor", "QueryChoice", "SegmentationStream", "SentencePrediction", "WindowCorrection"]


def _check_tokenizer(tokenizer: Any, model: nn.Module, where: str) -> None:
    vocab = model.config.text_encoder.vocab_size
    size = len(tokenizer)
    if size > vocab:
        raise UserError(f"tokenizer {where} has {size} tokens but the model's text encoder only {vocab}: "
                        "pass the tokenizer the checkpoint was trained with (--tokenizer DIR)")


class Predictor:
    """A model, its tokenizer, a device, a precision and inference settings, ready to segment videos.

    Args:
        model: a ``ReferFormer`` or a ``RefVOS`` (moved to ``device`` and put in eval mode here; RefVOS
            answers through its one-query view: query 0, masks at the input size).
        tokenizer: a loaded (fast) tokenizer of the model's text encoder.
        device, dtype: where and in what precision to run (``"auto"``/``"fp32"`` names accepted).
        settings: the inference settings (default: ``model.inference_settings`` when the model was
            loaded by :func:`referformer.load_model`, else the original's).
        sentence_batch_size: sentences decoded together (more = faster on a GPU, more memory).
        compile: ``torch.compile`` the model's heavy parts (:func:`referformer.models.compile_model`);
            off by default: the first window of each new size compiles for minutes.
        overrides: fields of :class:`InferenceSettings` to change (``short_side``, ``max_size``,
            ``window``, ``threshold``, ``query_policy``); ``None`` keeps the setting.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", *, settings: InferenceSettings | None = None,
                 sentence_batch_size: int = 8, compile: bool = False, **overrides: Any) -> None:
        from referformer.inference.tracklets import is_tracklets_model

        if is_tracklets_model(model):
            raise UserError("a tracklets model runs in its own pipeline: use referformer.inference.engines."
                            "load_predictor / predictor_for, or TrackletPredictor")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        base = settings or getattr(model, "inference_settings", None) or ORIGINAL_SETTINGS
        unknown = sorted(set(overrides) - set(base.to_dict()) | ({"tokenizer"} & set(overrides)))
        if unknown:
            raise TypeError(f"Predictor got unknown option(s) {', '.join(unknown)}")
        self.settings = base.override(**overrides)
        self.model = model.to(self.device).eval()
        if compile:
            compile_model(self.model)
        self.tokenizer = tokenizer
        if sentence_batch_size < 1:
            raise UserError(f"sentence_batch_size must be at least 1, got {sentence_batch_size}")
        self.sentence_batch_size = sentence_batch_size
        _check_tokenizer(tokenizer, model, "given")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, preset: str | None = None, tokenizer: Any = None,
                        device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32",
                        *, unsafe_load: bool = False, **options: Any) -> Predictor:
        """Load a bundled ReferFormer / RefVOS model by name, one of our folders or an official ``.pth``
        (architecture from ``preset`` or inferred) with :func:`referformer.load_model`. ``tokenizer``: a
        folder or a loaded tokenizer; by default the model's settings name it, else the one saved with
        the checkpoint, else the text config's (``roberta-base`` from the offline cache). ``options``:
        see the class arguments. A ``tracklets`` model raises ``UserError``: load any model with
        :func:`referformer.inference.engines.load_predictor`, which picks its engine."""
        return cls.for_model(load_model(name_or_path, preset, unsafe_load=unsafe_load), tokenizer, device, dtype,
                             **options)

    @classmethod
    def for_model(cls, model: nn.Module, tokenizer: Any = None, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "fp32", **options: Any) -> Predictor:
        """A Predictor for a loaded ReferFormer / RefVOS ``model``; ``tokenizer`` as in :meth:`from_pretrained`."""
        settings = getattr(model, "inference_settings", None) or ORIGINAL_SETTINGS
        default = settings.tokenizer or model.config.text_encoder.tokenizer
        checkpoint = getattr(model, "checkpoint_path", None)
        tok = find_tokenizer(tokenizer, checkpoint, default)
        _check_tokenizer(tok, model, str(tokenizer or checkpoint))
        return cls(model, tok, device, dtype, **options)

    # --- text --------------------------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        """Longest tokenised sentence (special tokens included) the text encoder accepts (512 for
        RoBERTa-base and for RefVOS's BERT-base; the text config knows how its model counts positions)."""
        return self.model.config.text_encoder.max_tokens

    def check_sentences(self, sentences: str | Sequence[str]) -> list[list[int]]:
        """Token ids of every sentence; refuses (``UserError``) an empty or over-long one. Cheap:
        call it before creating any output."""
        return tokenize_sentences(self.tokenizer, sentences, self.max_tokens)

    def encode_sentences(self, sentences: str | Sequence[str]) -> list[tuple[list[int], Any]]:
        """Tokenise and encode the sentences once: ``[(sentence indices, text features)]`` per batch
        (see :mod:`referformer.inference.sentences`)."""
        ids = self.check_sentences(sentences)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return encode_token_batches(self.model, ids, self.tokenizer.pad_token_id, self.sentence_batch_size,
                                        self.device)

    # --- videos ------------------------------------------------------------------------------
    def stream(self, sentences: Sequence[str], *, spill_dir: str | Path | None = None,
               spill_dtype: torch.dtype = torch.float16, keep_logits: bool = False) -> SegmentationStream:
        """A :class:`SegmentationStream` for ``sentences``; spilled mask logits go to a temporary
        folder inside ``spill_dir`` (default: the system's temporary folder)."""
        return SegmentationStream(self, sentences, spill_dir=spill_dir, spill_dtype=spill_dtype,
                                  keep_logits=keep_logits)

    def predict(self, source: str | Path | FrameSource | FramesInput, sentences: str | Sequence[str], *,
                window: int | None = None, spill_dtype: torch.dtype = torch.float16, return_logits: bool = False,
                progress: bool = False) -> list[SentencePrediction]:
        """Segment every sentence in every frame of ``source``.

        source: a video / GIF / image / frame-folder path (read with ``video_io``), a ``FrameSource``,
        or frames in memory (list of PIL images or HxWx3 arrays, a [T, H, W, 3] array). window:
        frames per clip (default: the settings' window, else 36). Returns one
        :class:`SentencePrediction` per sentence (masks bool [T, H, W] at the original size, boxes
        [T, 4] xyxy pixels, scores [T], query, query_scores [Q]; mask_logits [T, H, W] with
        ``return_logits``). All masks are returned in memory: for long videos write them to disk
        with ``referformer segment``.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        size = window if window is not None else self.settings.stream_window()
        per_window: list[list[SentenceWindowResult]] = []
        with self.stream(sentences, spill_dtype=spill_dtype, keep_logits=return_logits) as stream:
            for frame_window in tqdm(_windows_of(source, size), unit="window", disable=not progress):
                per_window.append(stream.process(frame_window))
            choices = stream.finish()
            for fix in stream.corrections():
                per_window[fix.window_index][fix.sentence] = fix.result
        out = []
        for i, sentence in enumerate(sentences):
            parts = [w[i] for w in per_window]
            logits = None
            if return_logits:
                logits = torch.from_numpy(np.concatenate([p.mask_logits for p in parts]))
            out.append(SentencePrediction(
                sentence=normalize_sentence(sentence),
                masks=torch.from_numpy(np.concatenate([p.masks for p in parts])),
                boxes=torch.from_numpy(np.concatenate([p.boxes_xyxy for p in parts])).float(),
                scores=torch.from_numpy(np.concatenate([p.frame_scores for p in parts])).float(),
                query=choices[i].query, query_scores=torch.from_numpy(choices[i].query_scores).float(),
                mask_logits=logits, window_queries=list(choices[i].window_queries)))
        return out

    # --- one frame of a pre-transformed clip (A2D / JHMDB / RefCOCO protocols) ----------------
    @torch.inference_mode()
    def frame_queries(self, frames: torch.Tensor, frame_index: int, orig_size: tuple[int, int],
                      sentences: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every query of one frame, per sentence, as the original ``engine.evaluate_a2d`` computes it.

        frames: ImageNet-normalised float ``[T, 3, h, w]`` (unpadded, transformed by the dataset);
        frame_index: the frame to predict; orig_size: ``(H, W)`` of the original frame. The clip is
        padded to a multiple of 32, the selected frame's features decoded, every query's mask logits
        upsampled x4 bilinearly (the original's ``scale_factor=4``, not the input size), thresholded,
        cropped to ``h x w`` and resized (nearest) to ``orig_size``; RefVOS's masks are at the input
        size already. Returns per sentence ``(masks bool [Q, H, W], scores [Q], boxes [Q, 4] xyxy
        pixels)``, on the CPU.
        """
        padded, padding = pad_videos([frames.to(self.device)], size_divisibility=32)
        h, w = frames.shape[-2:]
        sizes = torch.tensor([[h, w]], device=self.device)
        with autocast(self.device, self.dtype):
            visual = self.model.encode_video(padded, padding, sizes).select_frames(torch.tensor([[frame_index]]))
            results = []
            for indices, text in self.encode_sentences(sentences):
                out = self.model.decode(visual, text)
                for j, i in enumerate(indices):
                    scores = out["pred_logits"][j, 0].float().sigmoid().max(-1).values  # [Q]
                    logits = out["pred_masks"][j, 0][None].float()
                    if self.model.mask_stride != 1:
                        logits = F.interpolate(logits, scale_factor=float(self.model.mask_stride), mode="bilinear",
                                               align_corners=False)
                    masks = (logits[0].sigmoid() > self.settings.threshold)[:, :h, :w]
                    masks = F.interpolate(masks[None].float(), size=orig_size, mode="nearest")[0] > 0.5
                    boxes = cxcywh_to_xyxy_pixels(out["pred_boxes"][j, 0].float(), orig_size)
                    results.append((i, (masks.cpu(), scores.cpu(), boxes.cpu())))
        return [r for _, r in sorted(results, key=lambda x: x[0])]


def _windows_of(source: str | Path | FrameSource | FramesInput, size: int) -> Iterator[FrameWindow]:
    if size < 1:
        raise UserError(f"window must be at least 1 frame, got {size}")
    if isinstance(source, FrameSource):
        return source.windows(size)
    if isinstance(source, (str, Path)):
        return open_source(source).windows(size)
    images = load_frames(source)
    frames: Iterable[Frame] = (Frame(t, f"{t:05d}", np.asarray(im)) for t, im in enumerate(images))
    return iter_windows(frames, size)
