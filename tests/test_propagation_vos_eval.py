"""``evaluate --task vos``: the semi-supervised protocol on hand-made DAVIS-2017 and YouTube-VOS
layouts (the exact colour matcher gives known answers: which objects, which frames are given and
scored), and the command line on the synthetic benchmark with a random propagator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from propagation_toys import BLUE, GREEN, RED, colour_mask, colour_propagator, draw, save_frames, save_palette

from referformer import cli
from referformer.checkpoint import save_pretrained
from referformer.evaluation.drivers.vos import evaluate_vos
from referformer.models.propagation import build_propagator, propagator_preset

H, W = 24, 40


def _labels(frames: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = np.zeros(frames.shape[:-1], np.uint8)
    for object_id, colour in colours.items():
        out[colour_mask(frames, colour)] = object_id
    return out


def test_davis_2017_semi_supervised_protocol(tmp_path: Path) -> None:
    frames = draw(H, W, [[(RED, 1 + 3 * t, 3, 6), (BLUE, 28, 14, 6)] for t in range(7)])
    gt = _labels(frames, {1: RED, 3: BLUE})  # no object 2: DAVIS counts ids 1 .. max(frame 0)
    gt[-1] = 0  # a wrong last frame: the official protocol does not score the first and last frames
    base = tmp_path / "DAVIS"
    save_frames(frames, base / "JPEGImages" / "480p" / "seqa")
    (base / "Annotations" / "480p" / "seqa").mkdir(parents=True)
    for t, labels in enumerate(gt):
        save_palette(labels, base / "Annotations" / "480p" / "seqa" / f"{t:05d}.png")
    (base / "ImageSets" / "2017").mkdir(parents=True)
    (base / "ImageSets" / "2017" / "val.txt").write_text("seqa\n")
    out = tmp_path / "out"
    report = evaluate_vos("davis", tmp_path, "val", colour_propagator(), out, window=3, progress=False)
    assert report["layout"] == "davis-2017" and report["num_objects"] == 3
    assert report["J&F-Mean"] == 1.0 and report["J-Mean"] == 1.0 and report["F-Mean"] == 1.0
    assert [o["name"] for o in report["per_object"]] == ["seqa_1", "seqa_2", "seqa_3"]
    record = json.loads((out / "records" / "seqa.json").read_text())
    assert [len(o["j"]) for o in record["objects"]] == [5, 5, 5]  # frames 1 .. T - 2
    written = np.array(Image.open(out / "Annotations" / "seqa" / "00006.png"))
    assert np.array_equal(written, _labels(frames[6], {1: RED, 3: BLUE}))  # the propagation, not the bad GT


def test_youtube_vos_layout_gives_objects_where_they_first_appear(tmp_path: Path) -> None:
    # green enters at frame 3 (first annotated at 4); annotations on even frames only
    frames = draw(H, W, [[(RED, 1 + 2 * t, 3, 6)] + ([(GREEN, 20, 24 - 3 * t, 6)] if t >= 3 else [])
                         for t in range(9)])
    gt = _labels(frames, {1: RED, 2: GREEN})
    assert not (gt[2] == 2).any() and (gt[4] == 2).any()
    save_frames(frames, tmp_path / "train" / "JPEGImages" / "vid")
    (tmp_path / "train" / "Annotations" / "vid").mkdir(parents=True)
    for t in range(0, 9, 2):
        save_palette(gt[t], tmp_path / "train" / "Annotations" / "vid" / f"{t:05d}.png")
    out = tmp_path / "out"
    report = evaluate_vos("ytvos", tmp_path, "train", colour_propagator(), out, window=4, progress=False)
    assert report["num_objects"] == 2 and report["J&F-Mean"] == 1.0
    record = json.loads((out / "records" / "vid.json").read_text())
    assert [(o["object_id"], o["given"], len(o["j"])) for o in record["objects"]] == [(1, 0, 4), (2, 4, 2)]
    assert np.array_equal(np.array(Image.open(out / "Annotations" / "vid" / "00003.png")), gt[3])  # backward


@pytest.fixture(scope="module")
def propagator_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(build_propagator(propagator_preset("propagator-tiny")), tmp_path_factory.mktemp("p") / "prop")


def test_command_line_on_the_synthetic_benchmark(make_synthetic_root, propagator_dir: Path, tmp_path: Path,
                                                 capsys) -> None:
    root = make_synthetic_root(3, 2, ["valid"])
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--task", "vos", "--dataset", "synthetic", "--root", str(root), "--propagator",
                     str(propagator_dir), "--out", str(out), "--device", "cpu", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["task"], report["dataset"], report["split"], report["num_videos"]) == ("vos", "synthetic", "valid", 2)
    assert 0.0 <= report["J&F-Mean"] <= 1.0 and report["num_objects"] >= 4
    assert len(report["per_video"]) == 2 and (out / "report.json").is_file()
    videos = sorted((out / "Annotations").iterdir())
    assert len(videos) == 2 and all(len(list(v.glob("*.png"))) == 10 for v in videos)


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "vos", "--dataset", "synthetic", "--root", "."], "--task vos needs --propagator"),
    (["--task", "vos", "--dataset", "a2d", "--root", ".", "--propagator", "x"], "--task vos runs on davis, ytvos, synthetic"),
    (["--task", "vos", "--dataset", "davis", "--propagator", "x"], "needs --root"),
    (["--dataset", "a2d", "--root", ".", "--checkpoint", "x", "--propagate", "y"], "--propagate applies to the video"),
])
def test_bad_arguments(argv, message, capsys) -> None:
    assert cli.main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
