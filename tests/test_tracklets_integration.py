"""A tracklets model folder everywhere a checkpoint is accepted: ``engines.load_predictor`` and
``segment_video`` dispatch to the tracklet pipeline, never the ReferFormer path (``Predictor.from_pretrained``
refuses it); ``referformer segment`` writes its usual layout, ``referformer evaluate --dataset synthetic``
scores it with the kinds report and the tracklet recall. A tiny random model and a tiny random propagator folder (no trained weights)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_tracklets_model import _tiny_config

from referformer import load_model, segment_video
from referformer.checkpoint import save_pretrained
from referformer.checkpoint.settings import InferenceSettings
from referformer.cli import main as cli_main
from referformer.errors import UserError
from referformer.inference.engines import load_predictor, predictor_for
from referformer.inference.tracklet_stream import TrackletStream
from referformer.inference.predictor import Predictor
from referformer.inference.tracklets import TrackletPredictor
from referformer.models.propagation import build_propagator, propagator_preset
from referformer.models.tracklets import SegmenterConfig, build_tracklet_grounder


@pytest.fixture(scope="module")
def synth(make_synthetic_root):
    return make_synthetic_root(5, 2, ["test"])


@pytest.fixture(scope="module")
def folder(synth, tmp_path_factory):
    """A random tracklets-tiny-shaped folder (K = 3, every detection a candidate) with a random propagator."""
    work = tmp_path_factory.mktemp("tracklets")
    torch.manual_seed(0)
    propagator = save_pretrained(build_propagator(propagator_preset("propagator-tiny")).eval(), work / "propagator")
    base = _tiny_config()
    config = dataclasses.replace(base, propagator=str(propagator), max_tracklets=4,
                                 segmenter=dataclasses.replace(base.segmenter, score_threshold=0.0, max_detections=4))
    assert isinstance(config.segmenter, SegmenterConfig)
    model = save_pretrained(build_tracklet_grounder(config).eval(), work / "model",
                            inference=InferenceSettings(tokenizer="tokenizer"))
    shutil.copytree(synth / "tokenizer", model / "tokenizer")
    return model


def _frames(synth) -> tuple[list[str], np.ndarray]:
    video = sorted((synth / "test" / "JPEGImages").iterdir())[0]
    paths = sorted(video.glob("*.jpg"))
    return [p.stem for p in paths], np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_predictor_and_api_dispatch_to_the_tracklet_pipeline(folder, synth, one_thread) -> None:
    predictor = load_predictor(folder, device="cpu")
    assert isinstance(predictor, TrackletPredictor)
    with pytest.raises(UserError, match="tracklets"):
        Predictor(predictor.model, predictor.tokenizer)
    with pytest.raises(UserError, match="load_predictor"):
        Predictor.from_pretrained(folder, device="cpu")
    with pytest.raises(UserError, match="short_side"):
        predictor_for(predictor.model, short_side=96)
    _, frames = _frames(synth)
    sentences = ["the red circle", "a square moving left"]
    ours = predictor.predict(frames, sentences)
    assert len(predictor.last_tracklets) >= 1  # every detection is a candidate: at least one tracklet
    api = segment_video(load_model(folder), frames, sentences)
    for a, b in zip(ours, api):
        assert a.masks.shape == (10, 96, 128) and a.masks.dtype == torch.bool and a.boxes.shape == (10, 4)
        assert a.query == b.query and torch.equal(a.masks, b.masks)
        assert torch.equal(a.masks, predictor.last_tracklets.masks[a.query])


def test_segment_cli_writes_the_usual_layout(folder, synth, tmp_path, capsys, one_thread) -> None:
    names, _ = _frames(synth)
    video = sorted((synth / "test" / "JPEGImages").iterdir())[0]
    out = tmp_path / "out"
    assert cli_main(["segment", str(video), "-t", "the red circle", "--checkpoint", str(folder), "--out",
                     str(tmp_path / "x"), "--short-side", "64", "--device", "cpu"]) == 2
    assert "short_side" in capsys.readouterr().err  # a tracklets model has its own sizes: one-line refusal
    # --window 4: frames stream in windows of 4, the answer comes after the last (every window rewritten)
    assert cli_main(["segment", str(video), "-t", "the red circle", "-t", "a blue square", "--checkpoint", str(folder),
                     "--out", str(out), "--no-overlay", "--device", "cpu", "--json", "--window", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_frames"] == 10 and summary["complete"]
    results = json.loads((out / "results.json").read_text())
    assert [s["text"] for s in results["sentences"]] == ["the red circle", "a blue square"]
    for sentence in summary["sentences"]:
        pngs = sorted((out / sentence["mask_dir"]).glob("*.png")) if sentence["mask_dir"] else []
        assert [p.stem for p in pngs] == names
        assert np.asarray(Image.open(pngs[0])).shape == (96, 128)
        assert sentence["query"] >= 0 and 0.0 <= sentence["score"] <= 1.0


def test_evaluate_synthetic_reports_kinds_and_tracklet_recall(folder, synth, tmp_path, capsys, one_thread) -> None:
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--dataset", "synthetic", "--root", str(synth), "--split", "test", "--checkpoint",
                     str(folder), "--out", str(out), "--json", "--device", "cpu", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = json.loads((synth / "meta_expressions" / "test" / "meta_expressions.json").read_text())["videos"]
    assert report["num_videos"] == 2 and 0.0 <= report["J&F"] <= 1.0 and report["groups"]["all"]["count"] > 0
    assert 0.0 <= report["tracklet_recall"] <= 1.0
    rows = report["per_expression"]
    assert len(rows) == sum(len(v["expressions"]) for v in meta.values())
    assert all(0.0 <= r["tracklet_iou"] <= 1.0 for r in rows)
    objects = {(r["video"], r["referred"]): r["tracklet_iou"] for r in rows}
    assert report["tracklet_recall"] == pytest.approx(np.mean([iou >= 0.5 for iou in objects.values()]))
    for video, entry in meta.items():
        for exp_id in entry["expressions"]:
            assert sorted(p.stem for p in (out / "Annotations" / video / exp_id).glob("*.png")) == entry["frames"]


def test_stream_answers_after_the_last_window(folder, synth, one_thread) -> None:
    from referformer.inference.windows import FrameWindow

    predictor = load_predictor(folder, device="cpu")
    names, frames = _frames(synth)
    stream = predictor.stream(["the red circle"])
    assert isinstance(stream, TrackletStream)
    provisional = [stream.process(FrameWindow(s, names[s:s + 4], list(range(s, min(s + 4, 10))), frames[s:s + 4]))
                   for s in (0, 4, 8)]
    assert not any(r[0].masks.any() for r in provisional)  # nothing is known before the whole video
    choice = stream.finish()[0]
    fixes = list(stream.corrections())
    assert [(f.start, f.sentence) for f in fixes] == [(0, 0), (4, 0), (8, 0)]
    whole = predictor.predict(frames, ["the red circle"])[0]
    assert choice.query == whole.query
    assert np.array_equal(np.concatenate([f.result.masks for f in fixes]), whole.masks.numpy())
