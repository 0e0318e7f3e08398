"""results.json is strict JSON, has no box where there is no mask, and says when the input was cut."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from referformer.inference.results import SentenceWindowResult
from referformer.inference.results_json import dumps, json_safe
from referformer.inference.writers import RESULTS_PARTIAL, SegmentationWriter, finalize_results

H, W = 12, 16


def strict_load(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path.name} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def result(masks_on: list[bool], boxes: np.ndarray, scores: list[float], score: float = 0.5) -> SentenceWindowResult:
    masks = np.zeros((len(masks_on), H, W), bool)
    for t, on in enumerate(masks_on):
        masks[t, 2:6, 3:9] = on
    return SentenceWindowResult(1, score, masks, boxes, np.asarray(scores, float))


def test_frames_with_an_empty_mask_have_a_null_box(tmp_path: Path) -> None:
    # the box head answers something on every frame, negative coordinates included
    boxes = np.array([[3.0, 2.0, 8.0, 5.0], [-7.5, -3.0, -1.0, 4.0], [3.0, 2.0, 8.0, 5.0]])
    with SegmentationWriter(tmp_path / "out", ["x"], width=W, height=H, save_overlay=False) as writer:
        writer.write_window(["a", "b", "c"], None, [result([True, False, True], boxes, [0.9, 0.1, 0.8])])
        writer.rewrite_window(0, ["a", "b", "c"], 0, result([False, True, True], boxes, [0.2, 0.7, 0.8]))
    frames = strict_load(tmp_path / "out" / "results.json")["sentences"][0]["frames"]
    assert [f["box_xyxy"] for f in frames] == [None, [-7.5, -3.0, -1.0, 4.0], [3.0, 2.0, 8.0, 5.0]]
    assert [f["score"] for f in frames] == pytest.approx([0.2, 0.7, 0.8])  # scores stay on every frame


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    boxes = np.array([[math.nan, 2.0, 8.0, 5.0], [3.0, 2.0, math.inf, 5.0]])
    out = tmp_path / "out"
    with SegmentationWriter(out, ["x"], width=W, height=H, fps=12.5, save_overlay=False,
                            metadata={"sample_fps": math.inf}) as writer:
        writer.write_window(["a", "b"], None, [result([True, True], boxes, [math.nan, 0.5], score=math.nan)])
    results = strict_load(out / "results.json")
    assert results["sample_fps"] is None and results["fps"] == 12.5
    sentence = results["sentences"][0]
    assert sentence["score"] is None  # the only window's score was NaN
    assert [f["box_xyxy"] for f in sentence["frames"]] == [None, None]
    assert [f["score"] for f in sentence["frames"]] == [None, 0.5]
    assert json_safe({"a": (np.float32(np.inf), np.int64(3), [np.nan])}) == {"a": [None, 3, [None]]}
    assert dumps([math.nan, -math.inf, 1.5]) == "[null,null,1.5]"


def test_an_input_found_truncated_marks_the_results_incomplete(tmp_path: Path) -> None:
    boxes = np.tile([3.0, 2.0, 8.0, 5.0], (2, 1))
    out = tmp_path / "out"
    with SegmentationWriter(out, ["x"], width=W, height=H, save_overlay=False, background=True) as writer:
        writer.write_window(["a", "b"], None, [result([True, True], boxes, [0.9, 0.9])])
        writer.mark_incomplete("only 2 of the 40 frames its container declares could be decoded")
    results = strict_load(out / "results.json")
    assert results["complete"] is False  # the run itself ended normally
    assert results["warnings"] == ["only 2 of the 40 frames its container declares could be decoded"]
    assert results["num_frames"] == 2 and writer.summary["complete"] is False


def test_the_reason_survives_a_hard_crash(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = SegmentationWriter(out, ["x"], width=W, height=H, save_overlay=False)
    writer.write_window(["a"], None, [result([True], np.zeros((1, 4)), [0.5])])
    writer.mark_incomplete("decoding failed after 1 frames (Invalid data)")
    assert (out / RESULTS_PARTIAL).is_file()
    results = finalize_results(out)  # by hand, as after a killed process
    assert results["complete"] is False and results["warnings"] == ["decoding failed after 1 frames (Invalid data)"]


def test_a_complete_run_has_no_warnings_key(tmp_path: Path) -> None:
    with SegmentationWriter(tmp_path / "out", ["x"], width=W, height=H, save_overlay=False) as writer:
        writer.write_window(["a"], None, [result([True], np.zeros((1, 4)), [0.5])])
    results = strict_load(tmp_path / "out" / "results.json")
    assert results["complete"] is True and "warnings" not in results
