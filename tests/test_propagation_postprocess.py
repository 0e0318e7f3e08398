"""ReferFormer + propagation (the paper's post-process): the top-scoring frame is chosen from
hand-made scores (ties, empty masks), and its mask, propagated by the exact colour matcher, replaces
ReferFormer's in ``evaluate`` (:class:`PropagatingSegmenter`) and in ``segment --propagate``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from propagation_toys import BLUE, RED, colour_mask, colour_propagator, draw, save_frames

from referformer import cli
from referformer.checkpoint import InferenceSettings
from referformer.evaluation.drivers.propagating import PropagatingSegmenter
from referformer.evaluation.drivers.segmenters import ModelSegmenter, RefusedSentence, VideoRequest
from referformer.inference.post_propagation import reference_frame
from referformer.inference.results import SentenceWindowResult
from referformer.inference.sentences import SentenceTooLongError
from referformer.inference.writers import decode_mask_rle

H, W, T = 24, 40, 9


def test_reference_frame_rules() -> None:
    assert reference_frame([0.1, 0.9, 0.3], [True, True, True]) == 1
    assert reference_frame([0.1, 0.9, 0.9, 0.2], [True, True, True, True]) == 1  # ties: the earliest
    assert reference_frame([0.1, 0.9, 0.5], [True, False, True]) == 2  # an empty mask is not a candidate
    assert reference_frame([0.4, float("nan"), 0.2], [True, True, True]) == 0  # NaN counts as the lowest
    assert reference_frame([0.1, 0.9], [False, False]) is None  # nothing to propagate


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames = draw(H, W, [[(RED, 1 + 3 * t, 3, 6), (BLUE, 30 - 2 * t, 14, 6)] for t in range(T)])
    return frames, colour_mask(frames, RED), colour_mask(frames, BLUE)


def corrupted(truth: np.ndarray, keep: list[int]) -> np.ndarray:
    """``truth`` shifted down by 3 px except at the frames ``keep``."""
    out = np.roll(truth, 3, axis=1)
    out[keep] = truth[keep]
    return out


class FakePredictor:
    """Answers ``predict`` with hand-made masks [T, H, W] and per-frame scores [T] per sentence."""

    settings = InferenceSettings()

    def __init__(self, answers: dict[str, tuple[np.ndarray, list[float]]]) -> None:
        self.answers = answers

    def check_sentences(self, sentences):
        if "too long" in sentences[0]:
            raise SentenceTooLongError("sentence 1 has 600 tokens, more than 512", 0)

    def predict(self, frames, sentences, window=None, return_logits=False):
        return [types.SimpleNamespace(masks=torch.from_numpy(self.answers[s][0]),
                                      scores=torch.tensor(self.answers[s][1])) for s in sentences]


def test_propagating_segmenter_uses_the_top_scoring_frame() -> None:
    frames, red, blue = scene()
    red_scores = [0.2, 0.3, 0.1, 0.5, 0.4, 0.3, 0.8, 0.2, 0.1]  # top: frame 6, the only right mask
    blue_scores = [0.6, 0.1, 0.6, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]  # tie 0 / 2: frame 0 (right there only)
    empty_scores = [0.9] * T
    answers = {"red": (corrupted(red, [6]), red_scores), "blue": (corrupted(blue, [0]), blue_scores),
               "nothing": (np.zeros((T, H, W), bool), empty_scores)}
    segmenter = PropagatingSegmenter(ModelSegmenter(FakePredictor(answers)), colour_propagator(), window=4)
    request = VideoRequest("v", tuple(f"{t:05d}" for t in range(T)), [Image.fromarray(f) for f in frames],
                           ("0", "1", "2", "3"), ("red", "way too long", "blue", "nothing"))
    out = list(segmenter(request))
    assert segmenter.reference_frames["v"] == [6, None, 0, None]
    assert np.array_equal(out[0].numpy() > 0.5, red)
    assert isinstance(out[1], RefusedSentence) and "600 tokens" in out[1].reason  # refused, not propagated
    assert np.array_equal(out[2].numpy() > 0.5, blue)
    assert out[3].shape == (T, H, W) and not out[3].any()  # no non-empty frame: ReferFormer's (empty) result


class _Stream:
    def __init__(self, red: np.ndarray, scores: list[float]) -> None:
        self.red, self.scores = red, scores

    def process(self, window):
        positions = [int(name) for name in window.names]
        masks = self.red[positions]
        boxes = np.array([[0, 0, 1, 1]] * len(positions), float)
        scores = np.array([self.scores[t] for t in positions])
        return [SentenceWindowResult(2, float(scores.mean()), masks, boxes, scores)]

    def finish(self):
        return [types.SimpleNamespace(query=2, score=float(np.mean(self.scores)))]

    def corrections(self):
        return iter(())

    def close(self):
        pass


def test_segment_propagate_rewrites_masks_results_and_overlay(tmp_path: Path, monkeypatch, capsys) -> None:
    frames, red, _ = scene()
    folder = save_frames(frames, tmp_path / "frames")
    scores = [0.2, 0.3, 0.1, 0.5, 0.9, 0.3, 0.8, 0.2, 0.1]  # top: frame 4
    fake = types.SimpleNamespace(settings=InferenceSettings(window=4),
                                 stream=lambda sentences, spill_dir=None: _Stream(corrupted(red, [4]), scores))
    module = types.ModuleType("referformer.inference.engines")
    module.load_predictor = lambda checkpoint, **kw: fake
    monkeypatch.setitem(sys.modules, "referformer.inference.engines", module)
    import referformer.inference.propagators as propagators

    monkeypatch.setattr(propagators, "load_propagator", lambda name, device, **kw: colour_propagator())
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"stand-in")
    out = tmp_path / "out"
    assert cli.main(["segment", str(folder), "-t", "the red square", "--checkpoint", str(checkpoint), "--out",
                     str(out), "--device", "cpu", "--propagate", "colour", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sentence = summary["sentences"][0]
    assert sentence["propagation"]["reference_frame"] == "00004"
    assert sentence["propagation"]["reference_score"] == pytest.approx(0.9)
    assert sentence["num_frames_with_mask"] == T
    results = json.loads((out / "results.json").read_text())
    record = results["sentences"][0]
    assert record["propagation"]["propagator"] == "colour" and record["query"] == 2
    for t, frame in enumerate(record["frames"]):
        assert np.array_equal(decode_mask_rle(frame["mask_rle"]), red[t])
        assert frame["score"] == pytest.approx(scores[t])  # ReferFormer's scores are kept
        ys, xs = np.nonzero(red[t])
        assert frame["box_xyxy"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        png = np.asarray(Image.open(out / "0_the_red_square" / f"{t:05d}.png"))
        assert np.array_equal(png == 255, red[t])
    assert (out / "overlay.mp4").is_file() and not list(out.glob(".referformer-spill-*"))
