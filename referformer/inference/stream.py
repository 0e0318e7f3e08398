"""Segmenting one video window by window for fixed sentences: :class:`SegmentationStream`.

Built by :meth:`referformer.inference.predictor.Predictor.stream`. Per window, the visual backbone
runs once and the sentence-dependent part runs batched over the sentences. Per sentence, small
per-frame data of every query are kept for the whole video (sigmoid class scores ``[T, Q, K]`` and
boxes ``[T, Q, 4]``: a few KB per frame).

The query policy (:data:`referformer.checkpoint.settings.QUERY_POLICIES`) decides which query
answers a sentence:

* ``per_video`` (the original): the argmax over the whole video of the mean score. Each window is
  written at once with the *provisional* query (the best over the frames seen so far); the
  stride-4 mask logits of every query (``[T, Q, H/4, W/4]``) are spilled to a temporary ``.npy``
  file per window (``float16`` by default), so memory does not grow with the video, and the
  windows whose provisional query was not the final one are re-segmented from them at the end
  (:meth:`SegmentationStream.corrections`).
* ``per_window``: the argmax of the mean score over each window's frames, final at once (nothing
  is spilled, there are no corrections).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from referformer.errors import UserError
from referformer.inference.device import autocast
from referformer.inference.postprocess import cxcywh_to_xyxy_pixels, upsample_mask_logits
from referformer.inference.preprocess import preprocess_frames
from referformer.inference.results import SPILL_PREFIX, SentenceWindowResult
from referformer.inference.video_io import FrameWindow

if TYPE_CHECKING:
    from referformer.inference.predictor import Predictor


@dataclass
class QueryChoice:
    """The query that answered one sentence over the whole video.

    query: index of the query (per-window policy: the one that answered the most frames); score:
    its mean score (per video: over all frames; per window: the frame-weighted mean of the window
    scores), in [0, 1]; query_scores: float ``[Q]``, every query's mean score over all frames;
    window_queries: the query of each window.
    """

    query: int
    score: float
    query_scores: np.ndarray
    window_queries: list[int] = field(default_factory=list)


@dataclass
class WindowCorrection:
    """New results of one sentence on one window whose provisional query was not the final one.

    window_index: 0-based window number; start: position of its first frame among all frames;
    names: its frame names; sentence: 0-based sentence index; result: the results of the final query.
    """

    window_index: int
    start: int
    names: list[str]
    sentence: int
    result: SentenceWindowResult


@dataclass
class _WindowRecord:
    start: int
    names: list[str]
    queries: list[int]  # query written for each sentence
    scores: list[float]  # its score on the window
    spill: Path | None = None


class SegmentationStream:
    """Segments a video window by window for fixed sentences (see the module docstring).

    ``process(window)`` returns one result per sentence; after the last window, ``finish()`` returns
    the final query of each sentence and ``corrections()`` yields the windows to rewrite (per-video
    policy only). Use as a context manager: ``close()`` removes the spilled logits. With
    ``keep_logits`` every result also carries its upsampled mask logits.
    """

    def __init__(self, predictor: Predictor, sentences: Sequence[str], spill_dir: str | Path | None = None,
                 spill_dtype: torch.dtype = torch.float16, keep_logits: bool = False) -> None:
        if spill_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"spill_dtype must be torch.float16 or torch.float32, got {spill_dtype}")
        self.predictor = predictor
        self.sentences = list(sentences)
        self.per_window = predictor.settings.query_policy == "per_window"
        self.text = predictor.encode_sentences(self.sentences)  # refuses bad sentences before any work
        self.spill_dtype = spill_dtype
        self.keep_logits = keep_logits
        self._spill_parent = None if spill_dir is None else Path(spill_dir)
        self._spill_dir: Path | None = None
        n = len(self.sentences)
        self._probs: list[list[Tensor]] = [[] for _ in range(n)]  # per window [T, Q, K] sigmoid scores
        self._boxes: list[list[Tensor]] = [[] for _ in range(n)]  # per window [T, Q, 4] cxcywh, normalised
        self._windows: list[_WindowRecord] = []
        self._pending: tuple[_WindowRecord, np.ndarray] | None = None  # last window's logits, not spilled yet
        self._orig_size: tuple[int, int] | None = None
        self._choices: list[QueryChoice] | None = None

    # --- per window --------------------------------------------------------------------------
    def process(self, window: FrameWindow) -> list[SentenceWindowResult]:
        """Segment one window (RGB ``uint8`` frames ``[T, H, W, 3]``) for every sentence; returns one
        result per sentence (masks ``[T, H, W]`` at the original size), provisional under the
        per-video policy."""
        if self._choices is not None:
            raise RuntimeError("finish() was called: this stream takes no more windows")
        p = self.predictor
        clip, orig_size = preprocess_frames(window.images, short_side=p.settings.short_side,
                                            max_size=p.settings.max_size)
        if self._orig_size is not None and orig_size != self._orig_size:
            raise UserError(f"window at frame {window.start} is {orig_size[1]}x{orig_size[0]} but earlier frames "
                            f"are {self._orig_size[1]}x{self._orig_size[0]}; all frames must have one size")
        self._orig_size = orig_size
        t = clip.shape[0]
        outputs: list[tuple[Tensor, Tensor, Tensor] | None] = [None] * len(self.sentences)
        with torch.inference_mode(), autocast(p.device, p.dtype):
            visual = p.model.encode_video(clip.to(p.device)[None])
            for indices, text in self.text:
                out = p.model.decode(visual, text)
                for j, i in enumerate(indices):
                    outputs[i] = (out["pred_logits"][j].float(), out["pred_boxes"][j].float(),
                                  out["pred_masks"][j].float())
            del visual
            record = _WindowRecord(window.start, list(window.names), [], [])
            results = []
            for i, output in enumerate(outputs):
                assert output is not None
                logits, boxes, mask_logits = output
                probs = logits.sigmoid()
                self._probs[i].append(probs.cpu())
                self._boxes[i].append(boxes.cpu())
                # [Q] mean score over this window (per window) or over all frames so far (per video)
                seen = probs if self.per_window else torch.cat(self._probs[i])
                scores = seen.mean(0).max(-1).values
                query = int(scores.argmax(-1))
                record.queries.append(query)
                record.scores.append(float(scores[query]))
                results.append(self._result(i, len(self._windows), query, float(scores[query]),
                                            mask_logits[torch.arange(t), query]))
            if not self.per_window:
                spill = torch.stack([o[2] for o in outputs if o is not None]).to(self.spill_dtype).cpu().numpy()
        self._windows.append(record)
        if not self.per_window:
            self._spill_pending()
            self._pending = (record, spill)  # [S, T, Q, h, w]; kept in memory until the next window
        return results

    def _result(self, sentence: int, window_index: int, query: int, score: float,
                mask_logits: Tensor) -> SentenceWindowResult:
        """One query's result: ``[T, h, w]`` stride-4 logits -> bool ``[T, H, W]`` masks
        (``postprocess_clip``'s operations), boxes in pixels, per-frame scores."""
        assert self._orig_size is not None
        upsampled = upsample_mask_logits(mask_logits.float(), self._orig_size)
        masks = (upsampled.sigmoid() > self.predictor.settings.threshold).cpu().numpy()
        probs, boxes = self._probs[sentence][window_index], self._boxes[sentence][window_index]
        return SentenceWindowResult(
            query=query, score=score, masks=masks,
            boxes_xyxy=cxcywh_to_xyxy_pixels(boxes[:, query], self._orig_size).double().numpy(),
            frame_scores=probs[:, query].max(-1).values.double().numpy(),
            mask_logits=upsampled.cpu().numpy() if self.keep_logits else None)

    def _spill_pending(self) -> None:
        if self._pending is None:
            return
        record, logits = self._pending
        if self._spill_dir is None:
            if self._spill_parent is not None:
                self._spill_parent.mkdir(parents=True, exist_ok=True)
            self._spill_dir = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=self._spill_parent))
        record.spill = self._spill_dir / f"window{len(self._windows) - 2:06d}.npy"
        np.save(record.spill, logits)
        self._pending = None

    # --- at the end --------------------------------------------------------------------------
    def finish(self) -> list[QueryChoice]:
        """The final query of each sentence. Per video: argmax over ALL frames of the mean score (as
        the original does inside its clip), its score that mean. Per window: the query that answered
        the most frames (ties: the first seen), its score the frame-weighted mean of window scores."""
        if self._choices is None:
            if not self._windows:
                raise UserError("the video has no frames to segment")
            self._choices = []
            for i, probs in enumerate(self._probs):
                scores = torch.cat(probs).mean(0).max(-1).values
                if self.per_window:
                    frames: Counter[int] = Counter()
                    for w in self._windows:
                        frames[w.queries[i]] += len(w.names)
                    query = frames.most_common(1)[0][0]
                    total = sum(len(w.names) for w in self._windows)
                    score = sum(w.scores[i] * len(w.names) for w in self._windows) / total
                    window_queries = [w.queries[i] for w in self._windows]
                else:  # every window ends up with the final query (corrections rewrite the others)
                    query = int(scores.argmax(-1))
                    score = float(scores[query])
                    window_queries = [query] * len(self._windows)
                self._choices.append(QueryChoice(query, score, scores.double().numpy(), window_queries))
        return self._choices

    def corrections(self) -> Iterator[WindowCorrection]:
        """Results of the final query for every (window, sentence) written with another query,
        recomputed from the spilled logits (per-video policy; nothing under the per-window one)."""
        choices = self.finish()
        if self.per_window:
            return
        for w, record in enumerate(self._windows):
            stale = [i for i, c in enumerate(choices) if record.queries[i] != c.query]
            if not stale:
                continue
            if self._pending is not None and self._pending[0] is record:
                logits = self._pending[1]
            else:
                assert record.spill is not None
                logits = np.load(record.spill, mmap_mode="r")
            for i in stale:
                query = choices[i].query
                mask_logits = torch.from_numpy(np.ascontiguousarray(logits[i, :, query])).to(self.predictor.device)
                yield WindowCorrection(w, record.start, record.names, i,
                                       self._result(i, w, query, choices[i].score, mask_logits))
            del logits

    def close(self) -> None:
        """Remove the spilled logits (idempotent)."""
        self._pending = None
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None

    def __enter__(self) -> SegmentationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
