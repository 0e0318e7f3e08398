"""The sentence-object alignment term (our training option ``LossWeights.loss_align``)."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from referformer.data import build_dataset
from referformer.data.seeding import isolated_rng
from referformer.data.shared_clips import SharedClipSentences
from referformer.engine.alignment import object_embeddings, sentence_object_alignment_loss
from referformer.engine.criterion import LossWeights, SetCriterion
from referformer.engine.recipes import get_recipe
from referformer.engine.wiring import SharedClipCollate, build_components
from referformer.errors import UserError
from referformer.models import build_model
from referformer.presets import tiny_config
from referformer.engine.synthetic_tiny import synthetic_train_transforms
from referformer.synthetic.tokenizer import synthetic_vocab_size
from referformer.text import load_tokenizer


def test_object_embedding_is_the_area_weighted_mean_inside_the_mask():
    features = torch.zeros(2, 3, 2, 2)  # T=2, C=3, stride-8 cells of a 16x16 padded frame
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    features[0, :, 0, 1] = torch.tensor([0.0, 1.0, 0.0])
    features[1, :, 1, 1] = torch.tensor([0.0, 0.0, 4.0])
    masks = torch.zeros(1, 2, 12, 12)  # input 12x12 (padded to 16x16)
    masks[0, 0, :8, :8] = 1  # frame 0: all of cell (0, 0) -> weight 1
    masks[0, 0, :8, 8:12] = 1  # frame 0: half of cell (0, 1) (32 of 64 pixels) -> weight 0.5
    masks[0, 1, 8:12, 8:12] = 1  # frame 1: 16/64 of cell (1, 1) -> weight 0.25
    got = object_embeddings(features, masks)
    weights = torch.tensor([1.0, 0.5, 0.25])
    expected = (weights[0] * torch.tensor([1.0, 0, 0]) + weights[1] * torch.tensor([0, 1.0, 0])
                + weights[2] * torch.tensor([0, 0, 4.0])) / weights.sum()
    torch.testing.assert_close(got, expected[None])


def _features(sentences, clip_index):
    """Two 1-frame clips of 2x2 cells (16x16 pixels) with one-hot feature per cell."""
    visual = torch.zeros(2, 4, 2, 2)
    for cell in range(4):
        visual[:, cell, cell // 2, cell % 2] = 1.0
    return {"visual": visual, "sentence": torch.tensor(sentences), "clip_index": torch.tensor(clip_index),
            "num_frames": 1}


def _target(cell):
    mask = torch.zeros(1, 16, 16)
    mask[0, 8 * (cell // 2):8 * (cell // 2) + 8, 8 * (cell % 2):8 * (cell % 2) + 8] = 1
    return {"masks": mask}


def test_alignment_loss_is_the_cross_entropy_over_the_objects_of_each_clip():
    # clip 0: sentences about cells 0, 1 and again 0 (two distinct objects); clip 1: one object only
    sentences = [[1.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0]]
    targets = [_target(0), _target(1), _target(0), _target(3)]
    loss = sentence_object_alignment_loss(_features(sentences, [0, 0, 0, 1]), targets, temperature=0.5)
    # objects of clip 0: cell 0 (e0) and cell 1 (e1); cosines: s0 (1, 0), s1 (1/sqrt2, 1/sqrt2), s2 (0, 0)
    c = 1 / math.sqrt(2) / 0.5
    expected = torch.stack([
        F.cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0])),
        F.cross_entropy(torch.tensor([[c, c]]), torch.tensor([1])),
        F.cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([0])),
    ]).mean()  # clip 1 names one object: no contrast, left out
    torch.testing.assert_close(loss, expected)


def test_alignment_loss_without_contrast_is_zero_and_keeps_the_graph():
    sentences = torch.tensor([[1.0, 0, 0, 0]], requires_grad=True)
    features = _features([[0.0] * 4], [0])
    features["sentence"] = sentences
    loss = sentence_object_alignment_loss(features, [_target(0)])
    assert loss.item() == 0.0 and loss.requires_grad


def test_criterion_adds_the_term_with_its_weight_and_needs_the_features():
    weights = LossWeights(loss_align=3.0)
    assert weights.weight_dict(2)["loss_align"] == 3.0 and "loss_align_0" not in weights.weight_dict(2)
    assert "loss_align" not in LossWeights().weight_dict(2)  # off by default: the original's losses
    outputs = {"pred_logits": torch.zeros(1, 1, 2, 1), "pred_boxes": torch.full((1, 1, 2, 4), 0.5),
               "pred_masks": torch.zeros(1, 1, 2, 4, 4)}
    target = {"masks": torch.ones(1, 16, 16), "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]]),
              "valid": torch.ones(1, dtype=torch.long), "labels": torch.zeros(1, dtype=torch.long)}
    criterion = SetCriterion(weights=weights, num_decoder_layers=1)
    with pytest.raises(ValueError, match="return_features"):
        criterion(outputs, [target])
    outputs["features"] = _features([[1.0, 0, 0, 0]], [0])
    assert set(criterion(outputs, [target])) == {"loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice",
                                                 "loss_align"}


@pytest.fixture(scope="module")
def root(make_synthetic_root):
    return make_synthetic_root(seed=12, num_videos=2, splits=["train"])


def test_model_returns_the_features_of_each_clip_and_sentence(root):
    torch.manual_seed(0)
    config = tiny_config()
    config.text_encoder.vocab_size = synthetic_vocab_size()
    model = build_model(config).eval()
    clips = build_dataset("ytvos", root, "train", num_frames=2, categories=None, transforms=synthetic_train_transforms())
    random.seed(0)
    with isolated_rng(0):
        items = [SharedClipSentences(clips, sentences=3)[i] for i in (0, len(clips) - 1)]
    inputs, targets = SharedClipCollate(load_tokenizer(root / "tokenizer"))(items)
    out = model(**inputs, return_features=True)
    features = out["features"]
    h, w = inputs["frames"].shape[-2] // 8, inputs["frames"].shape[-1] // 8
    assert features["visual"].shape == (2 * 2, config.hidden_dim, h, w)  # each clip once
    assert features["sentence"].shape == (len(targets), config.hidden_dim)
    assert features["clip_index"].tolist() == inputs["clip_index"].tolist() and features["num_frames"] == 2
    text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(features["sentence"], text.sentence_feature)
    loss = sentence_object_alignment_loss(features, targets)
    assert torch.isfinite(loss) and loss.item() > 0
    assert "features" not in model(**inputs)  # only on request


def test_wiring_asks_for_several_sentences_per_clip(root):
    recipe = get_recipe("synthetic-tiny").replace(loss_weights=LossWeights(loss_align=1.0))
    with pytest.raises(UserError, match="sentences-per-clip"):
        build_components(recipe.replace(sentences_per_clip=1), root, str(root / "tokenizer"))
    components = build_components(recipe.replace(sentences_per_clip=2, num_frames=2), root, str(root / "tokenizer"))
    random.seed(0)
    with isolated_rng(0):
        inputs, targets = components.collate_fn([components.dataset[0]])
    out = components.forward(components.model_factory(), inputs, targets)  # what the Trainer calls
    assert set(out["features"]) == {"visual", "sentence", "clip_index", "num_frames"}
    plain = build_components(get_recipe("synthetic-tiny").replace(loss_weights=LossWeights()), root,
                             str(root / "tokenizer"))
    assert "features" not in plain.forward(plain.model_factory(), inputs, targets)  # off: the original call


def test_alignment_stage_trains_the_encoders_only_and_its_weights_initialise_training(root, tmp_path):
    from referformer.engine.align_pretrain import pretrain_alignment
    from referformer.engine.checkpointing import load_initial_weights

    config = get_recipe("synthetic-tiny").replace(sentences_per_clip=3, batch_size=2)
    components = build_components(config, root, str(root / "tokenizer"))
    torch.manual_seed(config.seed)
    initial = components.model_factory().state_dict()
    path = pretrain_alignment(config, root, tmp_path / "align.pth", steps=3, tokenizer=str(root / "tokenizer"),
                              num_frames=2, show_progress=False)
    saved = torch.load(path, weights_only=True)
    assert saved["steps"] == 3
    changed = {k for k, v in saved["model"].items() if not torch.equal(v, initial[k])}
    assert any(k.startswith("backbone.body.layer2.") for k in changed)
    assert any(k.startswith("input_proj.0.") for k in changed) and any(k.startswith("text_encoder.") for k in changed)
    # the term reads the stride-8 level only: the transformer, heads, CM-FPN, deeper stages and the
    # other levels get no gradient; the frozen stem and layer1 neither
    untouched = ("transformer.", "class_embed.", "bbox_embed.", "pixel_decoder.", "controller.", "fusion_module.",
                 "backbone.body.conv1.", "backbone.body.layer1.", "backbone.body.layer3.", "input_proj.1.")
    assert not any(k.startswith(untouched) for k in changed)
    losses = [float(line.split(",")[1]) for line in path.with_suffix(".csv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    model = components.model_factory()
    load_initial_weights(model, path)
    torch.testing.assert_close(model.state_dict()["input_proj.0.0.weight"], saved["model"]["input_proj.0.0.weight"])


def test_train_cli_sets_the_alignment_weight():
    import argparse

    from referformer.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--recipe", "ytvos-finetune", "--loss-align", "2.5", "--sentences-per-clip", "3"])
    config = train_command.config_from_args(args)
    assert config.loss_weights.loss_align == 2.5 and config.sentences_per_clip == 3
    assert config.loss_weights.loss_ce == get_recipe("ytvos-finetune").loss_weights.loss_ce  # the rest kept
    default = train_command.config_from_args(parser.parse_args(["train", "--recipe", "ytvos-finetune"]))
    assert default.loss_weights.loss_align == 0.0  # official recipes: off


def test_alignment_stage_refuses_what_it_cannot_train(root, tmp_path):
    from referformer.engine.align_pretrain import pretrain_alignment

    config = get_recipe("synthetic-tiny")
    with pytest.raises(UserError, match="sentences_per_clip"):
        pretrain_alignment(config.replace(sentences_per_clip=1), root, tmp_path / "a.pth", steps=1)
    with pytest.raises(UserError, match="at least one step"):
        pretrain_alignment(config, root, tmp_path / "a.pth", steps=0)
    with pytest.raises(UserError, match="ReferFormer"):
        pretrain_alignment(get_recipe("refvos-synthetic").replace(sentences_per_clip=2), root, tmp_path / "a.pth", 1)
    assert not (tmp_path / "a.pth").exists()


def test_train_command_runs_the_alignment_stage(root, tmp_path, capsys):
    """``referformer train --stage align``: the recipe with the command-line overrides through
    ``pretrain_alignment`` into ``--out``; the number of steps must be given."""
    from referformer.cli import main

    out = tmp_path / "align.pth"
    common = ["train", "--stage", "align", "--recipe", "synthetic-tiny", "--root", str(root),
              "--tokenizer", str(root / "tokenizer"), "--out", str(out)]
    assert main([*common, "--no-progress"]) == 2
    assert "--max-steps" in capsys.readouterr().err
    assert main([*common, "--max-steps", "1", "--num-frames", "2", "--batch-size", "1", "--sentences-per-clip", "2",
                 "--no-progress"]) == 0
    assert f"alignment weights: {out}" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["steps"] == 1
    assert main([*common, "--max-steps", "1", "--resume"]) == 2
    assert "starts afresh" in capsys.readouterr().err
