"""``referformer demo``: the bundled synthetic-tiny model segments a fresh synthetic video offline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from referformer.cli import main
from referformer.engine.synthetic_tiny import bundled_model_dir


def test_bundled_model_is_small_and_loads():
    """synthetic-tiny (recipe synthetic-tiny-v2) keeps only its own weights: the frozen all-MiniLM-L6-v2 is
    the shared part stored once in assets/shared, and the loader fills it in."""
    from referformer.checkpoint import load_model
    from referformer.text import load_tokenizer

    folder = bundled_model_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 10e6, f"bundled model is {size / 1e6:.1f} MB without its shared part"
    assert json.loads((folder / "config.json").read_text())["shared"] == {"text_encoder": "all-MiniLM-L6-v2"}
    model = load_model(folder)
    tokenizer = load_tokenizer(folder / "tokenizer")
    assert len(tokenizer) == model.config.text_encoder.vocab_size == 30522  # MiniLM's WordPiece vocabulary
    assert model.config.backbone == "efficientnet_lite0" and model.config.motion_queries
    assert model.config.freeze_text_encoder  # all-MiniLM-L6-v2 as shipped


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``referformer demo --seed 3`` run once in-process: (output folder, printed text)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # seed 3: 4 objects, motion expressions (any seed works; fixed for a stable test)
        assert main(["demo", "--out", str(out), "--seed", "3", "--expressions", "4"]) == 0
    return out, printed.getvalue()


def _printed_mean(printed: str) -> float:
    return float(re.search(r"mean J&F ([0-9.]+)", printed).group(1))


def test_demo_writes_segment_layout(demo_run):
    out, printed = demo_run
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert results["num_frames"] == 10 and (results["width"], results["height"]) == (128, 96)
    sentences = results["sentences"]
    assert 2 <= len(sentences) <= 4
    for i, sentence in enumerate(sentences):
        folder = out / sentence["mask_dir"]
        assert folder.name.startswith(f"{i}_")
        pngs = sorted(folder.glob("*.png"))
        assert [p.stem for p in pngs] == [f"{5 * t:05d}" for t in range(10)]
        mask = np.array(Image.open(pngs[0]))
        assert mask.shape == (96, 128) and set(np.unique(mask)) <= {0, 255}
    assert (out / "overlay.mp4").stat().st_size > 1000
    assert len(list((out / "frames").glob("*.png"))) == 10

    # the printed report: one row per expression, and the mean J&F (recomputed from the masks)
    truth = json.loads((out / "ground_truth.json").read_text())["report"]
    assert [r["expression"] for r in truth["expressions"]] == [s["text"] for s in sentences]
    for row in truth["expressions"]:
        assert row["expression"] in printed
    assert _printed_mean(printed) == pytest.approx(truth["mean_J&F"], abs=1e-3)


def test_demo_prints_how_many_expressions_picked_the_object(demo_run):
    out, printed = demo_run
    truth = json.loads((out / "ground_truth.json").read_text())["report"]
    found = re.search(r"picked the referred object in (\d+) of (\d+) expressions \(IoU >= 0.5 over the video", printed)
    assert found, printed
    picked, total = int(found.group(1)), int(found.group(2))
    assert total == len(truth["expressions"]) and 0 <= picked <= total
    assert picked == truth["picked"] == sum(r["picked"] for r in truth["expressions"])
    assert all(r["picked"] == (r["video_IoU"] >= 0.5) for r in truth["expressions"])
    # under the per-expression table, after the mean
    assert printed.index("mean J&F") < found.start()


def test_count_picked_uses_the_iou_over_the_whole_video():
    from referformer.commands.demo import count_picked, video_iou

    gt = np.zeros((2, 4, 4), dtype=bool)
    gt[:, :2, :2] = True  # 4 pixels in each of 2 frames: 8 in all
    exact = gt.copy()
    half = np.zeros_like(gt)
    half[0, :2, :2] = True  # frame 0 right, frame 1 empty: 4 / 8 = 0.5, picked (>=)
    wrong = np.zeros_like(gt)
    wrong[:, 2:, 2:] = True  # another object: IoU 0
    shifted = np.zeros_like(gt)
    shifted[:, :2, 1:3] = True  # 2 of 4 pixels per frame: 4 / 12 = 0.333 over the video
    assert video_iou(exact, gt) == 1.0 and video_iou(half, gt) == 0.5 and video_iou(wrong, gt) == 0.0
    assert video_iou(shifted, gt) == pytest.approx(1 / 3)
    assert count_picked([exact, wrong, half], [gt, gt, gt]) == 2
    assert count_picked([shifted, wrong, exact], [gt, gt, gt]) == 1
    # per-frame IoUs 1.0 and 0.0 (mean 0.5) but frame 1 is much larger: the video IoU weighs pixels
    big = np.zeros((2, 8, 8), dtype=bool)
    big[0, :1, :1] = True
    big[1] = True
    pred = np.zeros_like(big)
    pred[0, :1, :1] = True
    assert video_iou(pred, big) == pytest.approx(1 / 65) and count_picked([pred], [big]) == 0
    assert video_iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_demo_scores_above_untrained(demo_run):
    # The bundled model measures 0.34 on this video (0.03 for an untrained model): its 4 expressions
    # are the demo's motion-first choice, where it is weakest (docs/synthetic.md, "Results").
    assert _printed_mean(demo_run[1]) >= 0.15, demo_run[1]


@pytest.mark.xfail(strict=True, reason="synthetic-tiny does not reach the issue's J&F target yet "
                   "(J&F 0.514 on an unseen test split instead of 0.75; see docs/synthetic.md, Results)")
def test_demo_scores_high(demo_run):
    assert _printed_mean(demo_run[1]) >= 0.75, demo_run[1]


def test_demo_runs_the_model_it_is_given(tmp_path, capsys):
    """--checkpoint: a copy of the bundled folder gives the same masks as the default model; a missing
    model is one line."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), folder)
    args = ["demo", "--seed", "3", "--expressions", "2", "--no-overlay"]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    assert main([*args, "--out", str(tmp_path / "given"), "--checkpoint", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert f"model {folder} (window" in printed
    default, given = (json.loads((tmp_path / name / "ground_truth.json").read_text())["report"]
                      for name in ("default", "given"))
    assert given["model"] == str(folder) and given["expressions"] == default["expressions"]
    assert main([*args, "--out", str(tmp_path / "missing"), "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_demo_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(["demo", "--out", str(out), "--seed", "3", "--no-overlay"]) == 2
    assert "demo" in capsys.readouterr().err
