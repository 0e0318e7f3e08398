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
    from referformer.checkpoint import load_model
    from referformer.text import load_tokenizer

    folder = bundled_model_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 25e6, f"bundled model is {size / 1e6:.1f} MB"
    model = load_model(folder)
    tokenizer = load_tokenizer(folder / "tokenizer")
    assert len(tokenizer) <= model.config.text_encoder.vocab_size
    assert not model.config.freeze_text_encoder  # trained from scratch, text encoder included


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


def test_demo_scores_above_untrained(demo_run):
    # The bundled model measures 0.32 on this video (0.03 for an untrained model): it segments the
    # objects but often picks another one than the referred (docs/synthetic.md, "Results").
    assert _printed_mean(demo_run[1]) >= 0.15, demo_run[1]


@pytest.mark.xfail(strict=True, reason="synthetic-tiny does not reach the issue's J&F targets yet "
                   "(test J&F 0.317 instead of 0.85; see docs/synthetic.md, Results)")
def test_demo_scores_high(demo_run):
    assert _printed_mean(demo_run[1]) >= 0.75, demo_run[1]


def test_demo_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(["demo", "--out", str(out), "--seed", "3", "--no-overlay"]) == 2
    assert "demo" in capsys.readouterr().err
