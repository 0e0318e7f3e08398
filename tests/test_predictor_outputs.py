"""Rewrites and final choices in the results files (``SegmentationWriter`` / ``finalize_results``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from referformer.inference.writers import (
    RESULTS_PARTIAL,
    SegmentationWriter,
    SentenceWindowResult,
    decode_mask_rle,
    finalize_results,
)

H, W = 8, 10


def result(query: int, score: float, on: bool, frames: int = 2) -> SentenceWindowResult:
    masks = np.zeros((frames, H, W), bool)
    if on:
        masks[:, 2:5, 3:7] = True
    boxes = np.tile([3.0, 2.0, 6.0, 4.0], (frames, 1))
    return SentenceWindowResult(query, score, masks, boxes, np.full(frames, score))


def test_rewrite_and_final_choice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with SegmentationWriter(out, ["a", "b"], width=W, height=H, save_overlay=False, background=True) as writer:
        writer.write_window(["f0", "f1"], None, [result(0, 0.8, True), result(2, 0.5, True)])
        writer.write_window(["f2", "f3"], None, [result(1, 0.9, False), result(2, 0.5, True)])
        writer.rewrite_window(0, ["f0", "f1"], 0, result(1, 0.6, False))
        writer.set_final([{"query": 1, "score": 0.6}, {"query": 2, "score": 0.5}])
    summary = writer.summary
    assert writer.frames_rewritten == 2 and writer.frames_with_mask == [0, 4]
    a, b = summary["sentences"]
    assert (a["query"], a["score"], b["query"], b["score"]) == (1, 0.6, 2, 0.5)
    assert [f["frame"] for f in a["frames"]] == ["f0", "f1", "f2", "f3"]
    assert not any(decode_mask_rle(f["mask_rle"]).any() for f in a["frames"])  # window 0 rewritten
    assert all(decode_mask_rle(f["mask_rle"]).any() for f in b["frames"])
    assert [f["score"] for f in a["frames"]] == [0.6, 0.6, 0.9, 0.9]
    png = np.asarray(Image.open(out / "0_a" / "f0.png"))
    assert not png.any()


def test_crash_after_rewrite_keeps_it(tmp_path: Path) -> None:
    """A killed run: finalize by hand; rewrites and the final record written so far are applied."""
    out = tmp_path / "out"
    writer = SegmentationWriter(out, ["a"], width=W, height=H, save_overlay=False)
    writer.write_window(["f0", "f1"], None, [result(0, 0.8, True)])
    writer.write_window(["f2", "f3"], None, [result(1, 0.9, False)])
    writer.rewrite_window(0, ["f0", "f1"], 0, result(1, 0.7, False))
    # no final record, no close(): as if killed here
    with open(out / RESULTS_PARTIAL, "a") as partial:
        partial.write('{"type": "window", "fr')  # a line cut by the crash
    results = finalize_results(out)
    (a,) = results["sentences"]
    assert results["complete"] is False and results["num_frames"] == 4
    assert a["query"] == 1 and abs(a["score"] - 0.8) < 1e-9  # most frames; frame-weighted mean
    assert not any(decode_mask_rle(f["mask_rle"]).any() for f in a["frames"])
    assert json.loads((out / "results.json").read_text()) == results
