"""``referformer segment``: argument checks, one-line errors, and a full run with a stand-in model.

The real Predictor is not needed here: a fake ``referformer.inference.engines`` module (its ``load_predictor``) segments
the bright square painted in the test video, so the whole path input -> windows -> predictor ->
writers is exercised and its outputs checked against known answers.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
import pytest
from PIL import Image

from referformer import cli
from referformer.checkpoint import InferenceSettings
from referformer.inference.visualize import PALETTE
from referformer.inference.writers import SentenceWindowResult, decode_mask_rle

H, W, FPS, NUM_FRAMES = 96, 128, 10, 10
BACKGROUND = 30


def square_box(t: int) -> tuple[int, int, int, int]:
    """Frame t: a 16x16 white square moving right by 2 pixels per frame (x0, y0, x1, y1 exclusive)."""
    return 8 + 2 * t, 60, 24 + 2 * t, 76  # below the legend (top-left)


def frame_image(t: int) -> np.ndarray:
    image = np.full((H, W, 3), BACKGROUND, np.uint8)
    x0, y0, x1, y1 = square_box(t)
    image[y0:y1, x0:x1] = 255
    return image


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10"}
        for t in range(NUM_FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(t), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pth"
    path.write_bytes(b"stand-in checkpoint")
    return path


class FakeStream:
    """Sentence 0 finds the bright square (query 3); other sentences find nothing (query 0)."""

    def __init__(self, sentences):
        self.sentences = sentences
        self.closed = False

    def process(self, window):
        bright = window.images.mean(axis=-1) > 128  # [T, H, W]
        results = []
        for i, _ in enumerate(self.sentences):
            masks = bright if i == 0 else np.zeros_like(bright)
            boxes = np.array([_box(m) for m in masks], float)
            scores = np.full(len(window), 0.9 if i == 0 else 0.1)
            results.append(SentenceWindowResult(3 if i == 0 else 0, float(scores.mean()), masks, boxes, scores))
        return results

    def finish(self):
        return [types.SimpleNamespace(query=3 if i == 0 else 0, score=0.9 if i == 0 else 0.1)
                for i, _ in enumerate(self.sentences)]

    def corrections(self):
        return iter(())

    def close(self):
        self.closed = True


class FakePredictor:
    created: ClassVar[dict] = {}
    settings = InferenceSettings()

    @classmethod
    def from_pretrained(cls, checkpoint, **kwargs):
        cls.created = {"checkpoint": checkpoint, **kwargs}
        return cls()

    def stream(self, sentences, *, spill_dir=None):
        self.created["spill_dir"] = spill_dir
        return FakeStream(sentences)


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())] if len(xs) else [0.0] * 4


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> type[FakePredictor]:
    module = types.ModuleType("referformer.inference.engines")
    module.load_predictor = FakePredictor.from_pretrained
    monkeypatch.setitem(sys.modules, "referformer.inference.engines", module)
    return FakePredictor


def run_cli(*argv: str) -> int:
    return cli.main(["segment", *map(str, argv)])


def test_full_run_writes_every_output(tmp_path: Path, video: Path, checkpoint: Path, fake_model, capsys) -> None:
    out = tmp_path / "out"
    code = run_cli(video, "-t", "the white square", "-t", "a  cat ", "--checkpoint", checkpoint, "--out", out,
                   "--window", 4, "--device", "cpu", "--json", "--quiet")
    assert code == 0
    assert fake_model.created["device"].type == "cpu" and fake_model.created["preset"] is None
    summary = json.loads(capsys.readouterr().out)
    assert summary["out_dir"] == str(out) and summary["num_frames"] == NUM_FRAMES and summary["complete"]
    square, cat = summary["sentences"]
    assert (square["text"], square["query"], square["num_frames_with_mask"]) == ("the white square", 3, NUM_FRAMES)
    assert (cat["text"], cat["query"], cat["num_frames_with_mask"]) == ("a cat", 0, 0)
    assert square["score"] == pytest.approx(0.9)

    results = json.loads((out / "results.json").read_text())
    frames = results["sentences"][0]["frames"]
    assert [f["frame"] for f in frames] == [f"{t:05d}" for t in range(NUM_FRAMES)]
    for t, frame in enumerate(frames):
        x0, y0, x1, y1 = square_box(t)
        mask = decode_mask_rle(frame["mask_rle"])
        assert mask[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].all() and mask.sum() == pytest.approx(256, abs=40)
        assert frame["box_xyxy"] == pytest.approx([x0, y0, x1 - 1, y1 - 1], abs=1)
    # PNG masks, one folder per sentence
    assert sorted(p.name for p in out.iterdir()) == ["0_the_white_square", "1_a_cat", "overlay.mp4", "results.json"]
    assert len(list((out / "0_the_white_square").glob("*.png"))) == NUM_FRAMES
    png = np.asarray(Image.open(out / "0_the_white_square" / "00004.png"))
    x0, y0, x1, y1 = square_box(4)
    assert png.shape == (H, W) and png[y0 + 8, x0 + 8] == 255 and png[5, 100] == 0
    # overlay: sentence 0's colour blended over the square, nothing outside
    with av.open(str(out / "overlay.mp4")) as container:
        overlay = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(overlay) == NUM_FRAMES and overlay[0].shape[1:] == (W, 3)  # + a legend band below the frame
    expected = 0.5 * 255 + 0.5 * np.array(PALETTE[0])
    for t in (0, 9):
        x0, y0, x1, y1 = square_box(t)
        assert np.abs(overlay[t][y0 + 8, x0 + 8] - expected).max() <= 16
        assert np.abs(overlay[t][90, x1 + 10].astype(int) - BACKGROUND).max() <= 10


def test_sampling_options_reach_the_outputs(tmp_path: Path, video: Path, checkpoint: Path, fake_model, capsys) -> None:
    out = tmp_path / "out"
    assert run_cli(video, "-t", "square", "--checkpoint", checkpoint, "--out", out, "--stride", 3,
                   "--max-frames", 3, "--no-overlay", "--no-prefetch", "--device", "cpu", "--compile") == 0
    assert "wrote" in capsys.readouterr().out
    assert fake_model.created["compile"] is True
    assert sorted(p.stem for p in (out / "0_square").iterdir()) == ["00000", "00003", "00006"]
    assert not (out / "overlay.mp4").exists()
    # a frame folder keeps its file stems, --overwrite reuses the folder
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in (10, 2, 1):
        Image.fromarray(frame_image(t % 5)).save(frames / f"img{t}.png")
    assert run_cli(frames, "-t", "square", "--checkpoint", checkpoint, "--out", out, "--overwrite", "--quiet",
                   "--device", "cpu") == 0
    assert fake_model.created["compile"] is False
    assert sorted(p.stem for p in (out / "0_square").iterdir()) == ["img1", "img10", "img2"]
    results = json.loads((out / "results.json").read_text())
    assert [f["frame"] for f in results["sentences"][0]["frames"]] == ["img1", "img2", "img10"]


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda d, v, c: [d / "missing.mp4", "-t", "x", "--checkpoint", c, "--out", d / "o"], "input not found"),
        (lambda d, v, c: [_text_file(d), "-t", "x", "--checkpoint", c, "--out", d / "o"], "not a video"),
        (lambda d, v, c: [_empty_video(d), "-t", "x", "--checkpoint", c, "--out", d / "o"], "no frames"),
        (lambda d, v, c: [v, "-t", "x", "-t", "  ", "--checkpoint", c, "--out", d / "o"], "sentence 2 .* is empty"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d], "already exists.*--overwrite"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", d / "nope.pth", "--out", d / "o"], "checkpoint not found"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d / "o", "--window", 0], "--window"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d / "o", "--max-frames", 0], "--max-frames"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d / "o", "--device", "tpu"], "device"),
        (lambda d, v, c: [d, "-t", "x", "--checkpoint", c, "--out", d / "o"], "no frame images"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d / "o", "--tokenizer", d / "tok"],
         "tokenizer folder not found"),
        (lambda d, v, c: [v, "-t", "x", "--checkpoint", c, "--out", d / "o", "--device", "cpu", "--dtype", "fp16"],
         "not supported on device 'cpu'"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, video, checkpoint, fake_model, capsys, make_argv, message) -> None:
    code = run_cli(*make_argv(tmp_path, video, checkpoint))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("referformer segment: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


def _text_file(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    return path


def _empty_video(folder: Path) -> Path:
    path = folder / "empty.avi"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()
    return path


def test_unreadable_input(tmp_path: Path, video: Path, checkpoint: Path, capsys, monkeypatch) -> None:
    if os.name == "posix" and os.geteuid() == 0:
        # root reads files whatever their mode: make the open itself fail as it would for a user
        import referformer.inference.video_io as video_io

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(video_io.av, "open", refuse)
    video.chmod(0)
    try:
        assert run_cli(video, "-t", "x", "--checkpoint", checkpoint, "--out", tmp_path / "o") == 2
    finally:
        video.chmod(0o644)
    err = capsys.readouterr().err
    assert "cannot read" in err and "Permission denied" in err and err.count("\n") == 1


def test_missing_required_options_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli("video.mp4", "--out", "o", "--checkpoint", "c")  # no -t
    assert exit_info.value.code == 2
    assert "-t" in capsys.readouterr().err


# --- device and precision ----------------------------------------------------------------------


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from referformer.inference import device as device_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_module.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert device_module.resolve_device(None).type == "mps"
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    assert device_module.resolve_device("auto") == torch.device("cpu")
    assert device_module.resolve_device("CPU") == torch.device("cpu")
    from referformer.errors import UserError

    for name, message in [("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("mps", "MPS"), ("gpu", "unknown device")]:
        with pytest.raises(UserError, match=message):
            device_module.resolve_device(name)


def test_dtype_parsing_and_support(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from referformer.commands import segment
    from referformer.errors import UserError
    from referformer.inference import device
    from referformer.inference.device import autocast, resolve_dtype

    assert segment.DTYPE_CHOICES == device.DTYPE_CHOICES  # the CLI repeats them to avoid importing torch
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) is torch.float32
    assert resolve_dtype("FP32", cpu) is torch.float32
    assert resolve_dtype("bfloat16", cpu) is torch.bfloat16
    with pytest.raises(UserError, match="not supported on device 'cpu'.*bf16 or fp32"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(UserError, match="unknown precision"):
        resolve_dtype("int8", cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserError, match="'bf16' is not supported on device 'cuda'"):
        resolve_dtype("bf16", torch.device("cuda"))
    assert resolve_dtype("half", torch.device("cuda")) is torch.float16
    with autocast(cpu, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast(cpu, torch.float32):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


# --- the real predictor, end to end --------------------------------------------------------------


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A tiny random model saved with ``save_pretrained``, its tokenizer in ``tokenizer/``."""
    import torch

    from referformer.checkpoint import save_pretrained
    from referformer.models import build_model
    from referformer.presets import tiny_config
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer, synthetic_vocab_size

    config = tiny_config()
    config.text_encoder.vocab_size = synthetic_vocab_size()
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        model.controller.layers[-1].bias[-1] += 3.0  # masks about half on
    directory = save_pretrained(model, tmp_path / "tiny-model")
    build_synthetic_tokenizer(directory / "tokenizer")
    return directory


def test_real_predictor_end_to_end(tmp_path: Path, video: Path, tiny_checkpoint: Path, one_thread, capsys) -> None:
    from referformer.inference.predictor import Predictor

    out = tmp_path / "out"
    sentences = ["the white square", "a small cat"]
    code = run_cli(video, "-t", sentences[0], "-t", sentences[1], "--checkpoint", tiny_checkpoint, "--out", out,
                   "--window", 4, "--short-side", 48, "--device", "cpu", "--json", "--quiet")
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_frames"] == NUM_FRAMES and summary["complete"]
    assert sorted(p.name for p in out.iterdir()) == ["0_the_white_square", "1_a_small_cat", "overlay.mp4",
                                                     "results.json"]  # no spill folder left
    # the same as the Python API on the same frames and windows
    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu", short_side=48)
    expected = predictor.predict(video, sentences, window=4)
    results = json.loads((out / "results.json").read_text())
    for i, (sentence, prediction) in enumerate(zip(results["sentences"], expected)):
        assert sentence["query"] == prediction.query == summary["sentences"][i]["query"]
        assert sentence["score"] == pytest.approx(float(prediction.query_scores[prediction.query]), abs=1e-6)
        assert len(sentence["frames"]) == NUM_FRAMES
        for t, frame in enumerate(sentence["frames"]):
            mask = decode_mask_rle(frame["mask_rle"])
            assert mask.shape == (H, W)
            assert (mask != prediction.masks[t].numpy()).mean() < 0.01  # fp16-spilled rewrites may flip a pixel
            png = np.asarray(Image.open(out / sentence["mask_dir"] / f"{t:05d}.png"))
            assert png.shape == (H, W) and np.array_equal(png > 0, mask)
            assert frame["box_xyxy"] == pytest.approx(prediction.boxes[t].tolist(), abs=1e-3)
    with av.open(str(out / "overlay.mp4")) as container:
        overlay = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(overlay) == NUM_FRAMES and overlay[0].shape[1:] == (W, 3) and overlay[0].shape[0] > H  # legend band
