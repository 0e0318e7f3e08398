"""``evaluate --propagate NAME``: ReferFormer + propagation (the paper's post-process) for the drivers.

:class:`PropagatingSegmenter` answers the same video requests as
:class:`~.segmenters.ModelSegmenter`: ReferFormer segments every sentence of the request, then each
sentence's mask at its top-scoring frame (:func:`referformer.inference.post_propagation.reference_frame`:
highest per-frame score among frames with a non-empty mask, earliest on ties) is propagated forward
and backward through the request's frames, on its own (one object per sentence); the propagated
foreground probabilities are returned (``> 0.5`` is the object, as the propagation's label map).
A sentence with an empty mask in every frame keeps ReferFormer's all-empty result. The request is the
driver's clip: the whole video for Ref-YouTube-VOS / MeViS / synthetic, 36-frame clips for Ref-DAVIS17.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from referformer.errors import UserError
from referformer.evaluation.drivers.segmenters import ClipRequest, ModelSegmenter, QueryPrediction, RefusedSentence, VideoRequest
from referformer.inference.post_propagation import reference_frame
from referformer.inference.predictor import Predictor
from referformer.inference.propagation import FramePrompt, PropagationBackend, PropagationSession

__all__ = ["PropagatingSegmenter"]


class PropagatingSegmenter:
    """A :class:`ModelSegmenter` whose video results are propagated from each sentence's best frame.

    Attributes:
        segmenter: the ReferFormer side; propagator: the back end; window: frames per propagation
            window (memory granularity, not a model setting); reference_frames: per request, the
            chosen frame of each sentence (``None``: nothing to propagate), for reports and tests.
    """

    def __init__(self, segmenter: ModelSegmenter, propagator: PropagationBackend, window: int = 8) -> None:
        self.segmenter, self.propagator, self.window = segmenter, propagator, window
        self.reference_frames: dict[str, list[int | None]] = {}

    @property
    def predictor(self) -> Predictor:
        return self.segmenter.predictor

    @property
    def model(self) -> torch.nn.Module:
        return self.segmenter.model

    def __call__(self, request: VideoRequest) -> Iterator[Tensor | RefusedSentence]:
        """Per sentence: float ``[T, H, W]`` propagated probabilities (or a :class:`RefusedSentence`)."""
        accepted, refused = self.segmenter._check(request.sentences)
        window = self.segmenter.window or self.predictor.settings.window or len(request.frames)
        predictions = self.predictor.predict(list(request.frames), [request.sentences[i] for i in accepted],
                                             window=window) if accepted else []
        by_sentence = dict(zip(accepted, predictions))
        chosen: list[int | None] = []
        with PropagationSession(self.propagator, list(request.frames), window=self.window) as session:
            for i in range(len(request.sentences)):
                if i in refused:
                    chosen.append(None)
                    yield refused[i]
                    continue
                prediction = by_sentence[i]
                masks = prediction.masks.numpy().astype(bool)
                ref = reference_frame(prediction.scores.numpy(), masks.reshape(len(masks), -1).any(1))
                chosen.append(ref)
                if ref is None:
                    yield torch.zeros(masks.shape, dtype=torch.float32)
                    continue
                parts = list(session.run([FramePrompt(ref, {1: masks[ref]})]))
                yield torch.from_numpy(np.concatenate([p.probs[:, 0] for p in parts]))
        self.reference_frames[request.video_id] = chosen

    def queries(self, request: ClipRequest) -> list[QueryPrediction]:
        raise UserError("--propagate applies to the video benchmarks (ytvos, mevis, davis, synthetic), "
                        "not to single annotated frames (a2d, jhmdb, refcoco)")
