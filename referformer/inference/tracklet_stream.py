"""``referformer segment``'s window-by-window protocol over the whole-video tracklet pipeline:
:class:`TrackletStream` (built by :meth:`referformer.inference.tracklets.TrackletPredictor.stream`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from referformer.errors import UserError
from referformer.inference.results import SentencePrediction, SentenceWindowResult
from referformer.inference.stream import WindowCorrection
from referformer.inference.video_io import FrameWindow

__all__ = ["TrackletChoice", "TrackletStream"]


@dataclass
class TrackletChoice:
    """The answer of one sentence over the video (what ``segment`` records): the chosen tracklet's index
    ``query`` and its mean grounding score ``score``."""

    query: int
    score: float


class TrackletStream:
    """``segment``'s window-by-window protocol over the whole-video tracklet pipeline.

    ``process(window)`` keeps the window's frames and returns empty provisional results; ``finish()``
    builds the tracklets over all frames and grounds every sentence; ``corrections()`` then yields every
    window with its final results (the writer rewrites them and redraws the overlay). Memory: every frame
    of the video is held (the tracklet pipeline needs them all anyway)."""

    def __init__(self, predictor: Any, sentences: Sequence[str]) -> None:
        self.predictor, self.sentences = predictor, list(sentences)
        predictor.check_sentences(self.sentences)  # refuses bad sentences before any work
        self._windows: list[FrameWindow] = []
        self._predictions: list[SentencePrediction] | None = None

    def process(self, window: FrameWindow) -> list[SentenceWindowResult]:
        self._windows.append(window)
        t, h, w = window.images.shape[:3]
        empty = SentenceWindowResult(0, 0.0, np.zeros((t, h, w), bool), np.zeros((t, 4)), np.zeros(t))
        return [empty for _ in self.sentences]

    def finish(self) -> list[TrackletChoice]:
        if not self._windows:
            raise UserError("the video has no frame")
        video = np.concatenate([w.images for w in self._windows])
        self._predictions = self.predictor.predict(video, self.sentences)
        return [TrackletChoice(p.query, float(p.query_scores[p.query])) for p in self._predictions]

    def corrections(self) -> Iterator[WindowCorrection]:
        assert self._predictions is not None, "finish() first"
        for index, window in enumerate(self._windows):
            part = slice(window.start, window.start + len(window))
            for s, p in enumerate(self._predictions):
                result = SentenceWindowResult(p.query, float(p.query_scores[p.query]), p.masks[part].numpy(),
                                              p.boxes[part].double().numpy(), p.scores[part].double().numpy())
                yield WindowCorrection(index, window.start, list(window.names), s, result)

    def close(self) -> None:
        self._windows = []

    def __enter__(self) -> TrackletStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
