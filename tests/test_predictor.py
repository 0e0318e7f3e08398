"""The streaming Predictor on a tiny random model: sentence batching, windowing, rewrites, errors.

Known answers: ``segment_video`` on all frames at once (the original's inference), each sentence
run alone, and the model's own outputs per window for the query chosen over the whole video.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from referformer import cli
from referformer.checkpoint import save_official_checkpoint, save_pretrained
from referformer.errors import CheckpointMismatchError, UserError
from referformer.checkpoint import registry as registry_module
from referformer.inference.api import segment_video
from referformer.inference.postprocess import cxcywh_to_xyxy_pixels, upsample_mask_logits
from referformer.checkpoint import resolve_checkpoint
from referformer.inference.predictor import Predictor
from referformer.inference.preprocess import preprocess_frames
from referformer.inference.video_io import Frame, iter_windows, open_source
from referformer.inference.writers import decode_mask_rle
from referformer.models import build_model
from referformer.presets import tiny_config
from referformer.synthetic.tokenizer import build_synthetic_tokenizer, synthetic_vocab_size
from referformer.text import load_tokenizer

SHORT_SIDE = 48  # frames go to the model at 48 px (360 in real use): keeps the tests fast
SENTENCES = ["a red cube", "the big ball on the left", "a small green sphere that moves to the right"]


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """Tiny random ReferFormer whose masks are about half on (the last dynamic bias is shifted)."""
    config = tiny_config()
    config.text_encoder.vocab_size = synthetic_vocab_size()
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        model.controller.layers[-1].bias[-1] += 3.0
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted model folder with its tokenizer in ``tokenizer/``."""
    directory = save_pretrained(tiny_model(), tmp_path_factory.mktemp("tiny") / "model")
    build_synthetic_tokenizer(directory / "tokenizer")
    return directory


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.from_pretrained(model_dir, device="cpu", short_side=SHORT_SIDE)


def make_frames(n: int, h: int = 36, w: int = 48, seed: int = 0) -> np.ndarray:
    """[n, h, w, 3] uint8: a yellow square moving right on a dark noisy background."""
    rng = np.random.default_rng(seed)
    out = np.full((n, h, w, 3), 40, np.int64)
    for t in range(n):
        out[t, 8:24, 4 + 2 * t : 20 + 2 * t] = (230, 200, 40)
    return np.clip(out + rng.integers(0, 30, out.shape), 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# --- equality with the original inference and with single sentences ---------------------------


def test_short_video_equals_segment_video_on_all_frames(predictor: Predictor) -> None:
    frames = make_frames(5)
    ours = predictor.predict(frames, SENTENCES, window=36)
    reference = segment_video(predictor.model, frames, SENTENCES, tokenizer=predictor.tokenizer,
                              short_side=SHORT_SIDE, sentence_batch_size=1)
    for a, b in zip(ours, reference):
        assert a.sentence == b.sentence and a.query == b.query
        assert a.masks.shape == (5, 36, 48) and a.masks.dtype == torch.bool
        assert torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.query_scores, b.query_scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
    on = torch.stack([a.masks.float().mean() for a in ours])
    assert ((on > 0.05) & (on < 0.95)).any(), f"masks are trivial ({on}), the test would prove nothing"


@pytest.mark.parametrize("window", [36, 2])
def test_many_sentences_equal_each_sentence_alone(predictor: Predictor, window: int) -> None:
    frames = make_frames(6, seed=1)  # windows of 2: a 1-frame clip at 48 px would be a 1x1 map at stride 64
    together = predictor.predict(frames, SENTENCES, window=window)
    for sentence, joint in zip(SENTENCES, together):
        (alone,) = predictor.predict(frames, [sentence], window=window)
        assert alone.query == joint.query
        assert torch.equal(alone.masks, joint.masks)
        torch.testing.assert_close(alone.scores, joint.scores, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.query_scores, joint.query_scores, atol=1e-5, rtol=0)


# --- long videos: final query over all frames, rewrites ----------------------------------------


class DesignedScores:
    """Wraps ``model.decode``: real boxes and masks, class logits replaced by a plan per window.

    Window 0 favours query 0, windows 1 and 2 query 1: the provisional query of window 0 is 0,
    the final query (mean over all frames) is 1, so window 0 must be rewritten.
    """

    PLAN = ([2.0, -5.0, -5.0], [-5.0, 3.0, -5.0], [-5.0, 3.0, -5.0])

    def __init__(self, model: torch.nn.Module) -> None:
        self.decode = model.decode
        self.calls = 0

    def __call__(self, visual, text):
        out = dict(self.decode(visual, text))
        plan = torch.tensor(self.PLAN[min(self.calls, len(self.PLAN) - 1)])
        out["pred_logits"] = plan[None, None, :, None].expand_as(out["pred_logits"]).clone()
        self.calls += 1
        return out


@pytest.fixture
def designed(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Predictor:
    predictor = Predictor.from_pretrained(model_dir, device="cpu", short_side=SHORT_SIDE,
                                          sentence_batch_size=len(SENTENCES))
    monkeypatch.setattr(predictor.model, "decode", DesignedScores(predictor.model))
    return predictor


def reference_window_masks(predictor: Predictor, frames: np.ndarray, sentence: str, query: int):
    """The undisturbed model's masks [T, H, W] and boxes [T, 4] of ``query`` on one window."""
    decode = predictor.model.decode.decode
    clip, size = preprocess_frames(frames, short_side=SHORT_SIDE)
    ((_, text),) = predictor.encode_sentences([sentence])
    with torch.inference_mode():
        out = decode(predictor.model.encode_video(clip[None]), text)
    logits = out["pred_masks"][0][:, query]
    masks = upsample_mask_logits(logits, size).sigmoid() > 0.5
    return masks.numpy(), cxcywh_to_xyxy_pixels(out["pred_boxes"][0][:, query], size).numpy()


@pytest.mark.parametrize("spill_dtype", [torch.float32, torch.float16])
def test_long_video_final_query_over_all_frames_and_rewrites(designed: Predictor, tmp_path: Path,
                                                             spill_dtype: torch.dtype) -> None:
    frames = make_frames(6)
    windows = list(iter_windows((Frame(t, f"{t:05d}", im) for t, im in enumerate(frames)), 2))
    sentence = SENTENCES[0]
    with designed.stream([sentence], spill_dir=tmp_path, spill_dtype=spill_dtype) as stream:
        provisional = [stream.process(w)[0] for w in windows]
        # window 0 spilled to disk inside spill_dir; the last window stays in memory
        assert len(list(tmp_path.glob(".referformer-spill-*/*.npy"))) == 2
        (choice,) = stream.finish()
        fixes = list(stream.corrections())
    assert not list(tmp_path.iterdir()), "close() removes the spilled logits"
    assert [r.query for r in provisional] == [0, 1, 1]
    # final query: argmax over all 6 frames of the mean sigmoid score
    expected = torch.tensor(DesignedScores.PLAN).repeat_interleave(2, 0).sigmoid().mean(0)
    assert choice.query == int(expected.argmax()) == 1
    assert choice.score == pytest.approx(float(expected[1]), abs=1e-6)
    np.testing.assert_allclose(choice.query_scores, expected.numpy(), atol=1e-6)
    # exactly window 0 is rewritten, with the model's own masks of query 1
    assert [(f.window_index, f.start, f.names, f.sentence) for f in fixes] == [(0, 0, ["00000", "00001"], 0)]
    masks, boxes = reference_window_masks(designed, frames[:2], sentence, query=1)
    fixed = fixes[0].result
    assert fixed.query == 1 and fixed.score == pytest.approx(choice.score)
    np.testing.assert_allclose(fixed.boxes_xyxy, boxes, atol=1e-4)
    # per-frame scores of query 1 on window 0 (designed logit -5 there)
    np.testing.assert_allclose(fixed.frame_scores, [float(torch.tensor(-5.0).sigmoid())] * 2, atol=1e-6)
    if spill_dtype == torch.float32:
        assert np.array_equal(fixed.masks, masks)
    else:  # logits rounded to float16 before the upsampling: a pixel may flip right at the threshold
        assert (fixed.masks != masks).mean() < 0.01
    assert 0 < masks.mean() < 1
    # windows 1 and 2 were written with the final query already: they equal the reference
    later_masks, _ = reference_window_masks(designed, frames[2:4], sentence, query=1)
    assert np.array_equal(provisional[1].masks, later_masks)


def test_predict_applies_rewrites(designed: Predictor) -> None:
    frames = make_frames(6)
    (result,) = designed.predict(frames, [SENTENCES[0]], window=2, spill_dtype=torch.float32)
    designed.model.decode.calls = 0
    masks, _ = reference_window_masks(designed, frames[:2], SENTENCES[0], query=1)
    assert result.query == 1 and result.masks.shape == (6, 36, 48)
    assert np.array_equal(result.masks[:2].numpy(), masks)


def test_segment_to_folder_rewrites_outputs_and_overlay(designed: Predictor, tmp_path: Path) -> None:
    from referformer.commands.segment import segment_to_folder

    frames = make_frames(6, h=48, w=64)
    video = write_video(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    summary = segment_to_folder(designed, open_source(video), SENTENCES[:2], out, window=2, progress=False)
    assert summary["complete"] and summary["num_frames"] == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "0_a_red_cube", "1_the_big_ball_on_the_left", "overlay.mp4", "results.json"]
    results = json.loads((out / "results.json").read_text())
    decoded = np.stack([f.image for f in open_source(video)])
    designed.model.decode.calls = 0
    for i, sentence in enumerate(results["sentences"]):
        assert sentence["query"] == 1 and summary["sentences"][i]["query"] == 1
        assert len(sentence["frames"]) == 6
        masks, _ = reference_window_masks(designed, decoded[:2], SENTENCES[i], query=1)
        for t in range(2):  # the rewritten window, in results.json and in the PNGs
            frame = sentence["frames"][t]
            assert frame["frame"] == f"{t:05d}"
            assert (decode_mask_rle(frame["mask_rle"]) != masks[t]).mean() < 0.01
            png = np.asarray(Image.open(out / sentence["mask_dir"] / f"{t:05d}.png"))
            assert png.shape == (48, 64) and np.array_equal(png > 0, decode_mask_rle(frame["mask_rle"]))
        with_mask = sum(decode_mask_rle(f["mask_rle"]).any() for f in sentence["frames"])
        assert summary["sentences"][i]["num_frames_with_mask"] == with_mask
    with av.open(str(out / "overlay.mp4")) as container:
        overlay = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # a 64x48 frame is too small for the legend: it is drawn in a band below the frame
    assert len(overlay) == 6 and overlay[0].shape[1:] == (64, 3) and overlay[0].shape[0] > 48


# --- loading and errors ------------------------------------------------------------------------


def test_official_checkpoint_and_preset_checks(tmp_path: Path, model_dir: Path) -> None:
    model = tiny_model()
    path = tmp_path / "tiny.pth"
    save_official_checkpoint(model, path)
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        Predictor.from_pretrained(path, preset="tiny", tokenizer=tokenizer, device="cpu")  # vocab 300 vs 525
    with pytest.raises(CheckpointMismatchError, match="preset 'tiny'.*vocab_size"):
        Predictor.from_pretrained(model_dir, preset="tiny", device="cpu")


def test_long_sentence_is_refused(predictor: Predictor) -> None:
    with pytest.raises(UserError, match=r"sentence 2 is \d+ tokens long but the text encoder accepts at most 64"):
        predictor.encode_sentences(["the dog", "word " * 80])


def test_text_configs_know_their_longest_sentence() -> None:
    """RoBERTa counts positions from pad_token_id + 1, BERT from 0: both base models take 512 tokens."""
    from referformer.config import TextEncoderConfig
    from referformer.config import BertTextConfig

    assert TextEncoderConfig().max_tokens == 512  # 514 positions, pad id 1
    assert TextEncoderConfig(max_position_embeddings=66, pad_token_id=1).max_tokens == 64
    assert BertTextConfig().max_tokens == 512
    assert BertTextConfig(max_position_embeddings=64).max_tokens == 64


def test_resolve_checkpoint(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_checkpoint(model_dir) == model_dir
    with pytest.raises(UserError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "missing.pth")
    monkeypatch.setitem(registry_module.BUNDLED_MODELS, "ghost-model", "assets/ghost-model")
    with pytest.raises(UserError, match="bundled model 'ghost-model' is missing from this installation"):
        resolve_checkpoint("ghost-model")
    try:  # the synthetic-tiny weights ship with the package (when the assets are installed)
        bundled = resolve_checkpoint("synthetic-tiny")
    except UserError as error:
        assert "missing from this installation" in str(error)
    else:
        assert (bundled / "config.json").is_file() and (bundled / "tokenizer").is_dir()


def _model_without_tokenizer(tmp_path: Path, tokenizer_name: str, vocab: int | None = None) -> Path:
    model = tiny_model()
    model.config.text_encoder.tokenizer = tokenizer_name
    if vocab is not None:
        model.config.text_encoder.vocab_size = vocab
        model = build_model(model.config).eval()
    return save_pretrained(model, tmp_path / f"model-{vocab}")


@pytest.fixture
def cli_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", make_frames(3, h=48, w=64))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("preset", r"does not match preset 'tiny'"),
        ("long", r"sentence 1 is \d+ tokens long"),
        ("no_tokenizer", r"tokenizer 'no-such-tokenizer' is not available offline"),
        ("small_vocab", r"has 525 tokens but the model's text encoder only 300"),
        ("garbage", r"model.pth (is not a readable PyTorch checkpoint|contains Python objects)"),
        ("bundled", r"bundled model 'ghost-model' is missing from this installation"),
        ("short_side", r"--short-side must be at least 1"),
    ],
)
def test_model_errors_are_one_line(case, message, tmp_path, model_dir, cli_video, capsys, monkeypatch) -> None:
    checkpoint, extra, text = model_dir, [], "a red cube"
    if case == "preset":
        extra = ["--preset", "tiny"]
    elif case == "long":
        text = "word " * 80
    elif case == "no_tokenizer":
        checkpoint = _model_without_tokenizer(tmp_path, "no-such-tokenizer")
    elif case == "small_vocab":
        checkpoint = _model_without_tokenizer(tmp_path, "unused", vocab=300)
        extra = ["--tokenizer", model_dir / "tokenizer"]
    elif case == "garbage":
        checkpoint = tmp_path / "model.pth"
        checkpoint.write_bytes(b"not a checkpoint")
    elif case == "bundled":
        monkeypatch.setitem(registry_module.BUNDLED_MODELS, "ghost-model", "assets/ghost-model")
        checkpoint = "ghost-model"
    elif case == "short_side":
        extra = ["--short-side", "0"]
    argv = ["segment", cli_video, "-t", text, "--checkpoint", checkpoint, "--out", tmp_path / "o",
            "--device", "cpu", "--quiet", *extra]
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("referformer segment: error: ")
    assert re.search(message, err), err
