"""One inference engine, one loader: the model folder's settings reach every entry point, and every
entry point gives the same masks for the same model folder.

Known answers: the per-window query is recomputed here from the model's raw outputs; the entry
points are compared mask for mask.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from referformer.checkpoint import InferenceSettings, load_model, read_inference_settings, save_pretrained
from referformer.checkpoint.settings import ORIGINAL_SETTINGS
from referformer.cli import main as cli_main
from referformer.errors import UserError
from referformer.evaluation.drivers.segmenters import ModelSegmenter, RefusedSentence, VideoRequest
from referformer.inference.api import segment_video
from referformer.inference.predictor import Predictor
from referformer.inference.preprocess import preprocess_frames
from referformer.inference.writers import decode_mask_rle
from referformer.synthetic.scenes import SceneConfig, render_frame
from referformer.synthetic.writer import make_video
from referformer.text import load_tokenizer, normalize_sentence

BUNDLED = "synthetic-tiny-v1"  # the original architecture at tiny size: a fast model for the engine tests


@pytest.fixture(scope="module")
def video() -> tuple[list[str], np.ndarray, list[str]]:
    """A synthetic video no model saw: (frame names, uint8 [T, H, W, 3] frames, three expressions)."""
    v = make_video(11, "engine-test", 0, SceneConfig())
    frames = np.stack([render_frame(v.scene, t)[0] for t in range(len(v.frame_names))])
    sentences = [e.text for e in v.expressions[:3]]
    return list(v.frame_names), frames, sentences


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(BUNDLED, device="cpu")


# --- settings live with the model ----------------------------------------------------------------


def test_bundled_model_carries_its_settings(predictor: Predictor) -> None:
    assert load_model(BUNDLED).inference_settings == InferenceSettings(
        short_side=96, max_size=None, window=5, threshold=0.5, query_policy="per_window", tokenizer="tokenizer")
    assert predictor.settings.window == 5 and predictor.settings.short_side == 96
    # a keyword overrides one setting and keeps the others
    override = Predictor(predictor.model, predictor.tokenizer, short_side=48, query_policy="per_video")
    assert (override.settings.short_side, override.settings.window, override.settings.query_policy) == (
        48, 5, "per_video")
    with pytest.raises(TypeError, match="unknown option"):
        Predictor(predictor.model, predictor.tokenizer, window_size=3)


def test_settings_round_trip_and_defaults(tmp_path: Path) -> None:
    model = load_model(BUNDLED)
    custom = InferenceSettings(short_side=120, max_size=200, window=7, threshold=0.4, query_policy="per_video")
    folder = save_pretrained(model, tmp_path / "m", inference=custom)
    assert read_inference_settings(folder) == custom == load_model(folder).inference_settings
    # a folder written before the settings existed runs with the original's
    payload = json.loads((folder / "config.json").read_text())
    del payload["inference"]
    (folder / "config.json").write_text(json.dumps(payload))
    assert load_model(folder).inference_settings == ORIGINAL_SETTINGS == InferenceSettings(
        360, None, None, 0.5, "per_video", None)
    payload["inference"] = {"short_sid": 96}
    (folder / "config.json").write_text(json.dumps(payload))
    with pytest.raises(UserError, match="unknown inference setting"):
        load_model(folder)
    for bad in ({"query_policy": "per_frame"}, {"window": 0}, {"threshold": 1.5}):
        with pytest.raises(UserError, match="inference setting"):
            InferenceSettings.from_dict(bad)


# --- the query policies: known answers from the model's raw outputs ---------------------------------


def _raw_window_scores(model: torch.nn.Module, tokenizer, frames: np.ndarray, sentence: str) -> torch.Tensor:
    """[Q] mean over the frames of the max-over-classes sigmoid score, from encode_video + decode."""
    clip, _ = preprocess_frames([Image.fromarray(f) for f in frames], short_side=96)
    ids = torch.tensor([tokenizer(normalize_sentence(sentence))["input_ids"]])
    with torch.inference_mode():
        out = model.decode(model.encode_video(clip[None]), model.encode_text(ids, torch.ones_like(ids)))
    return out["pred_logits"][0].sigmoid().mean(0).max(-1).values


def test_query_policies_pick_the_known_query(predictor: Predictor, video) -> None:
    _, frames, sentences = video
    model, tokenizer = predictor.model, predictor.tokenizer
    per_window = predictor.predict(frames, sentences)  # the model's settings: windows of 5, per window
    per_video = Predictor(model, tokenizer, query_policy="per_video").predict(frames, sentences)
    for i, sentence in enumerate(sentences):
        expected = [int(_raw_window_scores(model, tokenizer, frames[s:s + 5], sentence).argmax())
                    for s in range(0, len(frames), 5)]
        assert per_window[i].window_queries == expected
        # per video: the argmax of the mean over all frames (windows of 5 frames weigh equally here)
        all_frames = torch.stack([_raw_window_scores(model, tokenizer, frames[s:s + 5], sentence)
                                  for s in range(0, len(frames), 5)]).mean(0)
        assert per_video[i].query == int(all_frames.argmax())
        assert per_video[i].window_queries == [per_video[i].query] * 2
        torch.testing.assert_close(per_video[i].query_scores, all_frames.float(), atol=1e-5, rtol=1e-5)


# --- every entry point, the same masks -------------------------------------------------------------


def test_every_entry_point_gives_the_same_masks(predictor: Predictor, video, tmp_path: Path) -> None:
    names, frames, sentences = video
    expected = np.stack([p.masks.numpy() for p in predictor.predict(frames, sentences)])  # [S, T, H, W]
    assert expected.any(axis=(1, 2, 3)).all(), "the model should find something for every sentence"

    api = segment_video(load_model(BUNDLED), list(frames), sentences)
    np.testing.assert_array_equal(np.stack([p.masks.numpy() for p in api]), expected)

    request = VideoRequest("v", tuple(names), [Image.fromarray(f) for f in frames], ("0", "1", "2"), tuple(sentences))
    driver = np.stack([p.numpy() > 0.5 for p in ModelSegmenter(predictor)(request)])
    np.testing.assert_array_equal(driver, expected)

    folder = tmp_path / "frames"
    folder.mkdir()
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / f"{name}.png")
    args = [a for s in sentences for a in ("-t", s)]
    assert cli_main(["segment", str(folder), *args, "--checkpoint", BUNDLED, "--out", str(tmp_path / "out"),
                     "--device", "cpu", "--quiet", "--no-overlay"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    cli = np.stack([[decode_mask_rle(f["mask_rle"]) > 0 for f in s["frames"]] for s in results["sentences"]])
    np.testing.assert_array_equal(cli, expected)


# --- one policy for over-long sentences ---------------------------------------------------------------


LONG = "the big red circle that is moving to the left of the small blue square " * 3


def test_long_sentence_is_refused_before_anything_is_written(tmp_path: Path, video, capsys) -> None:
    names, frames, _ = video
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frames[0]).save(folder / "00000.png")
    code = cli_main(["segment", str(folder), "-t", "the red circle", "-t", LONG, "--checkpoint", BUNDLED,
                     "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and "sentence 2 is" in captured.err and "tokens long" in captured.err
    assert captured.err.count("\n") == 1 and "segment:" not in captured.out
    assert not (tmp_path / "out").exists()  # the same command, fixed, runs without --overwrite


def test_evaluation_reports_a_refused_expression_and_goes_on(tmp_path: Path, capsys) -> None:
    root = tmp_path / "synth"
    assert cli_main(["synth", "--out", str(root), "--seed", "5", "--videos", "2", "--split", "test", "--quiet"]) == 0
    meta_path = root / "meta_expressions" / "test" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    video_id = sorted(meta["videos"])[0]
    expressions = meta["videos"][video_id]["expressions"]
    count = sum(len(v["expressions"]) for v in meta["videos"].values())
    expressions["0"]["exp"] = LONG
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    # no --split: the root holds only a test split
    assert cli_main(["evaluate", "--dataset", "synthetic", "--root", str(root), "--checkpoint", BUNDLED,
                     "--out", str(tmp_path / "eval"), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["num_expressions"] == count
    assert report["inference"]["window"] == 5 and report["inference"]["short_side"] == 96
    [refused] = report["refused_expressions"]
    assert (refused["video"], refused["expression"]) == (video_id, "0") and "tokens long" in refused["reason"]
    row = next(r for r in report["per_expression"] if (r["video"], r["expression"]) == (video_id, "0"))
    assert row["J"] < 1.0  # scored, as an empty mask against an object that is there
    masks = [np.array(Image.open(p)) for p in (tmp_path / "eval" / "Annotations" / video_id / "0").glob("*.png")]
    assert masks and not any(m.any() for m in masks)


def test_model_segmenter_answers_a_refused_sentence(predictor: Predictor, video) -> None:
    names, frames, sentences = video
    request = VideoRequest("v", tuple(names), [Image.fromarray(f) for f in frames], ("0", "1"), (sentences[0], LONG))
    first, second = list(ModelSegmenter(predictor)(request))
    assert isinstance(second, RefusedSentence) and "tokens long" in second.reason
    assert first.shape == (len(frames), 96, 128)


# --- loading errors are one line ----------------------------------------------------------------------


def _bundled_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(load_model(BUNDLED).checkpoint_path, folder)
    return folder


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_damaged_safetensors_is_one_line(tmp_path: Path, damage: str, capsys) -> None:
    folder = _bundled_copy(tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(os.urandom(4096) if damage == "random" else data[: len(data) // 2])
    for target in (folder, weights):  # the folder, or its weights file named directly
        with pytest.raises(UserError, match="is not a readable safetensors file"):
            load_model(target)
    bare = tmp_path / "bare.safetensors"
    shutil.copy(weights, bare)
    with pytest.raises(UserError, match="is not a readable safetensors file"):
        load_model(bare)
    (tmp_path / "f0.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "f0.png")
    code = cli_main(["segment", str(tmp_path / "f0.png"), "-t", "x", "--checkpoint", str(folder),
                     "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a readable safetensors file" in err and err.count("\n") == 1


def test_safetensors_of_unknown_layout_asks_for_the_cli_flag(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"some.tensor": torch.zeros(2)}, str(path))
    with pytest.raises(UserError, match=r"pass --preset NAME \(preset=NAME in Python"):
        load_model(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_pickled_code_points_at_unsafe_load(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(UserError, match="cannot be loaded safely.*--unsafe-load") as info:
        load_model(path)
    assert "download" not in str(info.value)


def test_folder_without_its_tokenizer_says_so(tmp_path: Path) -> None:
    folder = _bundled_copy(tmp_path)
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(UserError, match="holds none; put the tokenizer the model was trained with") as info:
        Predictor.from_pretrained(folder, device="cpu")
    assert "roberta-base" not in str(info.value)
    assert len(load_tokenizer(load_model(BUNDLED).checkpoint_path / "tokenizer")) > 0
