"""Outputs of ``referformer segment``: results.json / JSON Lines, PNG masks, RLE, output folder."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from referformer.errors import UserError
from referformer.inference.writers import (
    RESULTS_PARTIAL,
    SegmentationWriter,
    SentenceWindowResult,
    check_output_dir,
    decode_mask_rle,
    encode_mask_rle,
    finalize_results,
    prepare_output_dir,
    sentence_dir_name,
    sentence_slug,
)

H, W = 24, 32
SENTENCES = ["A man riding a bike!", "the dog"]


def square_mask(t: int, size: int = 6) -> np.ndarray:
    """Frame t: a size x size square whose top-left corner moves right by t pixels."""
    mask = np.zeros((H, W), bool)
    mask[4 : 4 + size, 2 + t : 2 + t + size] = True
    return mask


def window_result(names: list[str], query: int, score: float, empty: bool = False) -> SentenceWindowResult:
    t0 = int(names[0])
    masks = np.stack([square_mask(t0 + t) & (not empty) for t in range(len(names))])
    boxes = np.array([[2 + t0 + t, 4, 8 + t0 + t, 10] for t in range(len(names))], float)
    return SentenceWindowResult(query, score, masks, boxes, np.linspace(0.5, 0.9, len(names)))


def images(n: int) -> np.ndarray:
    return np.full((n, H, W, 3), 90, np.uint8)


def test_rle_roundtrip_is_coco_compressed() -> None:
    mask = square_mask(3)
    rle = encode_mask_rle(mask)
    assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
    assert np.array_equal(decode_mask_rle(rle), mask)
    # plain pycocotools reads it, area and box agree
    coco = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert mask_utils.area(coco) == 36
    assert mask_utils.toBbox(coco).tolist() == [5.0, 4.0, 6.0, 6.0]
    assert decode_mask_rle(encode_mask_rle(np.zeros((H, W), bool))).sum() == 0


def test_sentence_slugs() -> None:
    assert sentence_slug("A man riding a bike!") == "a_man_riding_a_bike"
    assert sentence_slug("  Café -- au lait ") == "cafe_au_lait"
    assert sentence_slug("狗") == "sentence"
    assert len(sentence_slug("word " * 40)) <= 40
    assert sentence_dir_name(3, "the dog") == "3_the_dog"


@pytest.mark.parametrize("background", [False, True])
def test_full_run_outputs(tmp_path: Path, background: bool) -> None:
    out = tmp_path / "out"
    names = [f"{i:05d}" for i in range(5)]
    with SegmentationWriter(
        out, SENTENCES, width=W, height=H, fps=6, metadata={"input": "clip.mp4"}, background=background
    ) as writer:
        writer.write_window(names[:3], images(3), [window_result(names[:3], 2, 0.8), window_result(names[:3], 1, 0.4, empty=True)])
        writer._wait_pending()
        assert (out / RESULTS_PARTIAL).is_file()  # incremental while running
        assert (out / "0_a_man_riding_a_bike" / "00002.png").is_file()
        writer.write_window(names[3:], images(2), [window_result(names[3:], 2, 0.9), window_result(names[3:], 5, 0.6, empty=True)])
    assert not (out / RESULTS_PARTIAL).exists()
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["num_frames"] == 5
    assert (results["width"], results["height"], results["fps"], results["input"]) == (W, H, 6, "clip.mp4")
    first, second = results["sentences"]
    assert [first["text"], second["text"]] == SENTENCES
    assert first["query"] == 2 and first["score"] == pytest.approx((3 * 0.8 + 2 * 0.9) / 5)
    assert second["query"] == 1  # 3 frames with query 1 against 2 with query 5
    assert [f["frame"] for f in first["frames"]] == names
    assert first["frames"][4]["box_xyxy"] == [6.0, 4.0, 12.0, 10.0]
    assert first["frames"][1]["score"] == pytest.approx(0.7)
    for t, frame in enumerate(first["frames"]):
        assert np.array_equal(decode_mask_rle(frame["mask_rle"]), square_mask(t))
    assert all(decode_mask_rle(f["mask_rle"]).sum() == 0 for f in second["frames"])
    # PNG masks: 0/255 'L', one per frame and sentence, frame names kept
    for i, sentence in enumerate(results["sentences"]):
        folder = out / sentence["mask_dir"]
        assert folder.name == sentence_dir_name(i, SENTENCES[i])
        assert sorted(p.stem for p in folder.iterdir()) == names
    png = Image.open(out / "0_a_man_riding_a_bike" / "00003.png")
    assert png.mode == "L" and png.size == (W, H)
    pixels = np.asarray(png)
    assert set(np.unique(pixels)) == {0, 255} and np.array_equal(pixels == 255, square_mask(3))
    # overlay: 5 frames of the input width; a 32x24 frame is too small for the legend, which is
    # drawn in a band below the frame
    with av.open(str(out / "overlay.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and frames[0].width == W and frames[0].height > H
    assert writer.frames_with_mask == [5, 0] and writer.frames_written == 5


def test_background_write_errors_reach_the_caller(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = SegmentationWriter(out, ["x"], width=W, height=H, save_overlay=False, background=True)
    names = ["00000", "00001"]
    (out / "0_x").rmdir()  # the PNG writer will fail in the thread
    writer.write_window(names, None, [window_result(names, 0, 0.5)])
    with pytest.raises(FileNotFoundError):
        writer.close(complete=False)
    results = json.loads((out / "results.json").read_text())  # still finalized
    assert results["complete"] is False and results["num_frames"] == 0


def test_overrides_and_no_overlay_no_masks(tmp_path: Path) -> None:
    names = ["a", "b"]
    writer = SegmentationWriter(tmp_path / "o", ["x"], width=W, height=H, save_masks=False, save_overlay=False)
    result = window_result(["00000", "00001"], 4, 0.3)
    writer.write_window(names, None, [result])
    writer.overrides = [{"query": 7, "score": 0.99}]
    summary = writer.close()
    assert summary["sentences"][0]["query"] == 7 and summary["sentences"][0]["score"] == 0.99
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["results.json"]
    assert writer.close() is summary  # idempotent


def test_exception_still_writes_incomplete_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = ["00000", "00001"]
    with pytest.raises(RuntimeError), SegmentationWriter(out, ["x"], width=W, height=H, fps=5) as writer:
        writer.write_window(names, images(2), [window_result(names, 0, 0.5)])
        raise RuntimeError("model crashed in the second window")
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and results["num_frames"] == 2
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


def test_finalize_after_hard_crash_ignores_cut_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = SegmentationWriter(out, ["x"], width=W, height=H, save_overlay=False)
    for start in (0, 2):
        names = [f"{start + t:05d}" for t in range(2)]
        writer.write_window(names, None, [window_result(names, 1, 0.5)])
    # simulate a crash while the third line was being written
    with open(out / RESULTS_PARTIAL, "a") as partial:
        partial.write('{"type":"window","frames":["00004"')
    results = finalize_results(out)
    assert results["complete"] is False and results["num_frames"] == 4
    assert json.loads((out / "results.json").read_text())["sentences"][0]["query"] == 1
    with pytest.raises(UserError, match="nothing to finalize"):
        finalize_results(out)


def test_output_folder_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert check_output_dir(out) == out and not out.exists()
    out.mkdir()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        check_output_dir(out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        check_output_dir(tmp_path / "file", overwrite=True)
    # --overwrite removes the outputs of an earlier run and nothing else
    (out / "results.json").write_text("{}")
    (out / "0_old_sentence").mkdir()
    (out / "0_old_sentence" / "00000.png").write_bytes(b"")
    (out / "1_keep").mkdir()
    (out / "1_keep" / "notes.txt").write_text("mine")
    (out / "readme.txt").write_text("mine")
    prepare_output_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["1_keep", "readme.txt"]


def test_window_shape_mismatch_is_reported(tmp_path: Path) -> None:
    writer = SegmentationWriter(tmp_path / "o", ["x"], width=W, height=H, save_overlay=False)
    bad = SentenceWindowResult(0, 0.5, np.zeros((1, H, W + 1), bool), np.zeros((1, 4)), np.zeros(1))
    with pytest.raises(ValueError, match="shape"):
        writer.write_window(["a"], None, [bad])
    with pytest.raises(ValueError, match="expected 1 sentence"):
        writer.write_window(["a"], None, [])
    writer.close()


def test_from_prediction_converts_api_results() -> None:
    import torch

    SentencePrediction = pytest.importorskip("referformer.inference.api").SentencePrediction

    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[1, 3:5, 4:9] = True
    prediction = SentencePrediction(
        sentence="the dog", masks=masks, boxes=torch.tensor([[0.0, 0, 1, 1], [4, 3, 8, 4]]),
        scores=torch.tensor([0.2, 0.7]), query=2, query_scores=torch.tensor([0.1, 0.3, 0.45]),
    )
    result = SentenceWindowResult.from_prediction(prediction)
    assert (result.query, result.score) == (2, pytest.approx(0.45))
    assert result.masks.dtype == bool and result.masks[1].sum() == 10
    assert result.boxes_xyxy[1].tolist() == [4, 3, 8, 4]
    assert result.frame_scores.tolist() == pytest.approx([0.2, 0.7])
