"""CI-short version of the ``synthetic-tiny`` recipe: the real model, wiring, trainer and data.

A few dozen optimizer steps on three synthetic videos (the recipe's model, initialisation and
optimiser, shorter clips): the loss must fall, and J&F on those videos must rise clearly above the
untrained model's for the best query (segmentation), without falling for the selected query.
The full recipe and its numbers: docs/synthetic.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from referformer.engine.recipes import get_recipe
from referformer.engine.trainer import Trainer
from referformer.engine.wiring import build_components
from referformer.evaluation.synthetic import query_jf_split, score_split

STEPS = 40
NUM_FRAMES = 3


@pytest.fixture(scope="module")
def synthetic_root(make_synthetic_root):
    return make_synthetic_root(seed=5, num_videos=3, splits=["train"])


def _jf(model, tokenizer, root) -> tuple[float, float]:
    """(J&F of the selected query, J&F of the best query) on the training videos."""
    model.eval()
    return query_jf_split(model, tokenizer, root, "train", window=NUM_FRAMES)


def test_recipe_is_registered():
    recipe = get_recipe("synthetic-tiny")
    assert recipe.dataset == "synthetic" and recipe.num_frames == 5
    assert not recipe.freeze_text_encoder and recipe.device == "cpu"
    assert recipe.optimizer.lr == recipe.optimizer.lr_backbone == recipe.optimizer.lr_text_encoder


def test_short_synthetic_training_learns(synthetic_root, tmp_path):
    from referformer.text import load_tokenizer

    torch.manual_seed(0)
    config = get_recipe("synthetic-tiny").replace(epochs=1, num_frames=NUM_FRAMES, batch_size=2, num_workers=0)
    components = build_components(config, synthetic_root, tokenizer=str(synthetic_root / "tokenizer"),
                                  dataset_options={"samples_per_epoch": STEPS * config.batch_size})
    trainer = Trainer(config, components.model_factory, components.dataset, tmp_path / "run",
                      components.collate_fn, forward=components.forward, show_progress=False)
    tokenizer = load_tokenizer(synthetic_root / "tokenizer")
    before = _jf(trainer.model, tokenizer, synthetic_root)
    trainer.fit()
    after = _jf(trainer.model, tokenizer, synthetic_root)
    # the selected query's J&F is what inference returns; score_split computes the same thing
    scores = score_split(trainer.model.eval(), tokenizer, synthetic_root, "train", window=NUM_FRAMES,
                         progress=False)
    assert np.mean([s.jf for s in scores]) == pytest.approx(after[0], abs=1e-6)

    print(f"J&F (selected query, best query): before {before}, after {after}")
    losses = np.array([row["loss"] for row in trainer.history])
    assert len(losses) == STEPS
    assert losses[-10:].mean() < 0.8 * losses[:10].mean(), losses
    # Segmentation is learnt first, grounding (choosing the referred object) much later; on three
    # training videos 40 steps of the recipe (4 sentences per clip, alignment term) raise both.
    # Measured (selected, best query): before (0.035, 0.079), after (0.296, 0.424).
    assert after[1] > before[1] + 0.1 and after[1] > 0.2, (before, after)
    assert after[0] > before[0] + 0.1, (before, after)


def test_export_writes_the_bundled_layout(tmp_path):
    """``recipes/synthetic_tiny.py``'s ``export``: a training checkpoint -> fp16 ``save_pretrained`` folder + tokenizer that
    loads back to the same weights (up to fp16 rounding) and is readable by everyone."""
    from referformer.checkpoint import load_model
    from referformer.models import build_model
    from referformer.engine.synthetic_tiny import synthetic_tiny_config
    from recipes.synthetic_tiny import export
    from referformer.text import load_tokenizer

    torch.manual_seed(0)
    model = build_model(synthetic_tiny_config())
    torch.save({"model": model.state_dict(), "progress": {"global_step": 3}}, tmp_path / "last.pth")
    out = export(tmp_path / "last.pth", tmp_path / "model", {"name": "synthetic-tiny"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.rglob("*") if p.is_file())
    loaded = load_model(out)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name].float(), value.half().float(), atol=0, rtol=0)
    assert load_tokenizer(out / "tokenizer")("the red circle")["input_ids"][0] == 0  # <s>


def test_evaluate_reports_windows_and_the_stride_cap(tmp_path, capsys):
    """``recipes/synthetic_tiny.py``'s ``evaluate`` on a generated split with the bundled model: per-window summaries by kind
    and the stride-4 cap over the same expressions; ``print_report`` prints both."""
    from referformer.synthetic import SceneConfig, generate_dataset
    from referformer.evaluation.synthetic import mask_stride_cap
    from recipes.synthetic_tiny import evaluate, print_report

    generate_dataset(tmp_path, 11, 1, splits=("valid",), config=SceneConfig(num_frames=4), progress=False)
    report = evaluate("synthetic-tiny", tmp_path, "valid", windows=(2, 1))
    assert set(report) == {"model", "split", "window_2", "window_1", "stride_4_cap"}
    count = report["window_2"]["all"]["count"]
    assert count == report["window_1"]["all"]["count"] == report["stride_4_cap"]["count"] >= 2
    assert report["stride_4_cap"] == mask_stride_cap(tmp_path, "valid", stride=4)
    assert 0.0 < report["stride_4_cap"]["J&F"] < 1.0
    print_report(report)
    printed = capsys.readouterr().out
    assert f"J&F {report['stride_4_cap']['J&F']:.3f}" in printed and printed.startswith("group")


def test_evaluate_without_data_says_which_step_to_run(tmp_path, capsys):
    from recipes.synthetic_tiny import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(tmp_path), "--steps", "evaluate", "--model", "synthetic-tiny"])
    assert exit_info.value.code == 2
    assert "run the data step first (--steps data)" in capsys.readouterr().err
