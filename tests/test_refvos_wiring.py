"""RefVOS through the shared machinery: recipes, optimizer groups, the Trainer, save/load, presets,
``segment``, ``evaluate --dataset synthetic`` and the synthetic scoring (all on tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from referformer.checkpoint import load_model, read_pretrained_config, save_pretrained
from referformer.cli import main as cli_main
from referformer.config import RefVOSConfig
from referformer.engine.optim import OptimizerConfig, build_param_groups, optimizer_names
from referformer.engine.recipes import get_recipe
from referformer.engine.trainer import Trainer
from referformer.engine.wiring import build_components
from referformer.models.refvos import RefVOS, build_refvos, refvos_query_outputs
from referformer.presets import get_preset
from referformer.synthetic import SceneConfig, build_synthetic_tokenizer

SCENE = SceneConfig(height=48, width=64, num_frames=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(make_synthetic_root) -> Path:
    return make_synthetic_root(seed=7, num_videos=2, splits=["train", "valid"], config=SCENE)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, synth) -> Path:
    """A save_pretrained folder of a random refvos-tiny model with the synthetic tokenizer."""
    torch.manual_seed(0)
    model = build_refvos(get_preset("refvos-tiny").config).eval()
    folder = save_pretrained(model, tmp_path_factory.mktemp("refvos") / "model", metadata={"name": "refvos-tiny"})
    build_synthetic_tokenizer(folder / "tokenizer")
    return folder


def test_recipes_and_presets_are_registered(capsys):
    recipe = get_recipe("refvos-synthetic")
    assert recipe.model == "refvos" and recipe.dataset == "synthetic" and recipe.num_frames == 1
    assert recipe.device == "cpu" and not recipe.freeze_text_encoder
    for name in ("refvos-refcoco", "refvos-ytvos"):
        assert get_recipe(name).model == "refvos" and get_recipe(name).model_preset == "refvos-r101"
    assert get_recipe("ytvos-finetune").model == "referformer"
    config = get_preset("refvos-r101").config
    assert isinstance(config, RefVOSConfig) and config.backbone == "resnet101" and config.output_stride == 8
    assert tuple(config.atrous_rates) == (12, 24, 36) and config.text_encoder.hidden_size == 768
    assert cli_main(["presets"]) == 0
    listed = capsys.readouterr().out
    assert "refvos-r101" in listed and "refvos-tiny" in listed


def test_optimizer_groups_follow_the_model_names():
    model = build_refvos(get_preset("refvos-tiny").config)
    config = OptimizerConfig(lr=1.0, lr_backbone=2.0, lr_text_encoder=3.0, **optimizer_names("refvos"))
    groups = {g["name"]: g for g in build_param_groups(model, config)}
    assert set(groups) == {"rest", "backbone", "text_encoder"}
    names = {id(p): n for n, p in model.named_parameters()}
    for group, prefix in (("backbone", "backbone."), ("text_encoder", "text_encoder.")):
        assert all(names[id(p)].startswith(prefix) for p in groups[group]["params"])
    rest = {names[id(p)].split(".")[0] for p in groups["rest"]["params"]}
    assert rest == {"classifier", "text_proj"}
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone."))
    assert sum(p.numel() for p in groups["backbone"]["params"]) == backbone
    # ReferFormer's default keywords are untouched
    assert optimizer_names("referformer") == {"backbone_names": OptimizerConfig().backbone_names,
                                              "text_encoder_names": OptimizerConfig().text_encoder_names,
                                              "linear_proj_names": OptimizerConfig().linear_proj_names}


def test_refvos_trains_through_the_trainer(synth, tmp_path):
    steps = 12
    config = get_recipe("refvos-synthetic").replace(epochs=1, batch_size=4, model_preset="refvos-tiny",
                                                    **{"optimizer.lr": 3e-3, "optimizer.lr_backbone": 3e-3})
    components = build_components(config, synth, tokenizer=str(synth / "tokenizer"),
                                  dataset_options={"samples_per_epoch": steps * config.batch_size})
    assert components.criterion_factory is not None
    trainer = Trainer(config, components.model_factory, components.dataset, tmp_path / "run", components.collate_fn,
                      forward=components.forward, criterion_factory=components.criterion_factory,
                      show_progress=False)
    assert isinstance(trainer.model, RefVOS)
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"rest", "backbone", "text_encoder"}
    trainer.fit()
    losses = np.array([row["loss"] for row in trainer.history])
    assert len(losses) == steps and set(trainer.history[0]) >= {"loss", "loss_ce"}
    assert losses[-4:].mean() < 0.8 * losses[:4].mean(), losses  # measured: 0.65 -> 0.48
    # the training checkpoint loads as a RefVOS through the preset (load_model / segment --preset)
    loaded = load_model(tmp_path / "run" / "last.pth", preset="refvos-tiny")
    assert isinstance(loaded, RefVOS)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key


def test_unknown_model_and_wrong_preset_are_user_errors(synth):
    from referformer.errors import UserError

    with pytest.raises(UserError, match="unknown model"):
        build_components(get_recipe("refvos-synthetic").replace(model="nope"), synth)
    with pytest.raises(UserError, match="not a RefVOS"):
        build_components(get_recipe("refvos-synthetic").replace(model_preset="tiny"), synth,
                         tokenizer=str(synth / "tokenizer"))


def test_save_pretrained_round_trip_is_exact(tiny_folder):
    config, metadata = read_pretrained_config(tiny_folder)
    assert isinstance(config, RefVOSConfig) and metadata == {"name": "refvos-tiny"}
    assert json.loads((tiny_folder / "config.json").read_text())["model"]["model_type"] == "refvos"
    torch.manual_seed(0)
    original = build_refvos(get_preset("refvos-tiny").config).eval()  # same seed as the fixture's model
    loaded = load_model(tiny_folder)
    assert isinstance(loaded, RefVOS) and not loaded.training
    frames = torch.randn(1, 2, 3, 40, 56)
    ids = torch.tensor([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.inference_mode():
        a = original.decode(original.encode_video(frames), original.encode_text(ids, mask))
        b = loaded.decode(loaded.encode_video(frames), loaded.encode_text(ids, mask))
    assert set(a) == {"seg_logits", "pred_logits", "pred_boxes", "pred_masks"}
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_query_view_hand_computed():
    """One frame 2x3: fg - bg logits [[2, -2, 0.5], [-1, 3, -3]] -> mask {(0,0), (0,2), (1,1)}."""
    diff = torch.tensor([[2.0, -2.0, 0.5], [-1.0, 3.0, -3.0]])
    seg = torch.stack([torch.zeros_like(diff), diff])[None, None]  # [1, 1, 2, 2, 3]
    out = refvos_query_outputs(seg)
    assert out["pred_masks"].shape == (1, 1, 1, 2, 3) and torch.equal(out["pred_masks"][0, 0, 0], diff)
    expected_score = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(0.5))
                      + torch.sigmoid(torch.tensor(3.0))) / 3
    assert torch.sigmoid(out["pred_logits"][0, 0, 0, 0]).item() == pytest.approx(expected_score.item(), abs=1e-6)
    # box: x 0..2, y 0..1 (inclusive extents) -> cx 1/3, cy 0.5/2, w 2/3, h 1/2
    assert out["pred_boxes"][0, 0, 0].tolist() == pytest.approx([1 / 3, 0.25, 2 / 3, 0.5])


def test_segment_cli_with_a_refvos_folder(synth, tiny_folder, tmp_path, capsys):
    from referformer.inference.predictor import Predictor
    from referformer.inference.writers import decode_mask_rle

    video = synth / "valid" / "JPEGImages" / sorted((synth / "valid" / "JPEGImages").iterdir())[0].name
    out = tmp_path / "out"
    sentences = ["the red circle", "a small square"]
    code = cli_main(["segment", str(video), "-t", sentences[0], "-t", sentences[1], "--checkpoint", str(tiny_folder),
                     "--out", str(out), "--window", "3", "--short-side", "48", "--device", "cpu", "--json",
                     "--quiet", "--no-overlay"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_frames"] == SCENE.num_frames and summary["complete"]
    results = json.loads((out / "results.json").read_text())
    expected = Predictor.from_pretrained(tiny_folder, device="cpu", short_side=48).predict(video, sentences, window=3)
    for sentence, prediction in zip(results["sentences"], expected):
        assert sentence["query"] == prediction.query == 0  # RefVOS: one "query"
        # score = mean over frames of the per-frame score (mean foreground probability inside the mask)
        assert sentence["score"] == pytest.approx(float(prediction.scores.mean()), abs=1e-5)
        assert len(sentence["frames"]) == SCENE.num_frames
        for t, frame in enumerate(sentence["frames"]):
            mask = decode_mask_rle(frame["mask_rle"])
            assert mask.shape == (SCENE.height, SCENE.width)
            assert (mask != prediction.masks[t].numpy()).mean() < 0.01
            assert frame["score"] == pytest.approx(float(prediction.scores[t]), abs=1e-5)


def test_predictor_and_scoring_match_postprocess_refvos_clip(synth, tiny_folder):
    """segment_video / score_split (the synthetic scoring) give postprocess_refvos_clip's masks."""
    from PIL import Image

    from referformer.inference.api import segment_video
    from referformer.inference.preprocess import preprocess_frames
    from referformer.models.refvos import postprocess_refvos_clip
    from referformer.evaluation.synthetic import score_split
    from referformer.text import load_tokenizer, tokenize

    model = load_model(tiny_folder)
    tokenizer = load_tokenizer(tiny_folder / "tokenizer")
    video_dir = sorted((synth / "valid" / "JPEGImages").iterdir())[0]
    frames = [Image.open(p).convert("RGB") for p in sorted(video_dir.iterdir())]
    sentences = ["the red circle", "a big blue triangle"]
    results = segment_video(model, frames, sentences, tokenizer=tokenizer, short_side=48)
    clip, orig = preprocess_frames(frames, short_side=48)
    ids, mask = tokenize(tokenizer, sentences)
    with torch.inference_mode():
        seg = model.decode(model.encode_video(clip[None]), model.encode_text(ids, mask))["seg_logits"]
    for i, result in enumerate(results):
        reference = postprocess_refvos_clip(seg[i], tuple(clip.shape[-2:]), orig)
        assert torch.equal(result.masks, reference.masks)
        assert torch.allclose(result.scores, reference.scores, atol=1e-5)
    scores = score_split(model, tokenizer, synth, "valid", window=1, progress=False)
    assert scores and all(0.0 <= s.jf <= 1.0 for s in scores)
    per_frame = score_split(model, tokenizer, synth, "valid", window=SCENE.num_frames, progress=False)
    # RefVOS is per frame: the window length does not change anything
    assert [s.jf for s in scores] == pytest.approx([s.jf for s in per_frame], abs=1e-9)


def test_evaluate_synthetic_with_a_refvos_folder(synth, tiny_folder, tmp_path, capsys):
    assert cli_main(["evaluate", "--dataset", "synthetic", "--root", str(synth), "--checkpoint", str(tiny_folder),
                     "--out", str(tmp_path), "--json", "--device", "cpu", "--no-progress", "--short-side", "48"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["J&F"] <= 1.0 and "all" in report["groups"]
    assert (tmp_path / "report.json").is_file()


def test_mlm_step_command_and_text_encoder_init(synth, tmp_path, capsys):
    """`referformer train --stage mlm` writes BERT weights; `text_encoder_init` starts RefVOS from them."""
    from safetensors.torch import load_file

    from referformer.engine.text_mlm import train_wordpiece_tokenizer, training_sentences

    sentences = training_sentences(synth)
    assert len(sentences) > 3 and all(isinstance(s, str) and s for s in sentences)
    train_wordpiece_tokenizer(sentences, vocab_size=120, output_dir=tmp_path / "wordpiece")
    out = tmp_path / "bert_mlm.safetensors"
    assert cli_main(["train", "--stage", "mlm", "--root", str(synth), "--preset", "refvos-tiny",
                     "--tokenizer", str(tmp_path / "wordpiece"), "--out", str(out), "--max-steps", "3",
                     "--batch-size", "4"]) == 0
    assert "3 steps" in capsys.readouterr().out
    saved = load_file(str(out))
    config = get_recipe("refvos-synthetic").replace(model_preset="refvos-tiny", text_encoder_init=str(out))
    model = build_components(config, synth, tokenizer=str(tmp_path / "wordpiece")).model_factory()
    state = model.text_encoder.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())
    # ReferFormer recipes refuse the RefVOS-only option
    from referformer.errors import UserError

    with pytest.raises(UserError, match="RefVOS options"):
        build_components(get_recipe("synthetic-tiny").replace(text_encoder_init=str(out)), None)
    with pytest.raises(UserError, match="RefVOS options"):
        build_components(get_recipe("synthetic-tiny").replace(class_weights=(1.0, 2.0)), None)


def test_clip_requests_a2d_refcoco_style(tiny_folder):
    """ModelSegmenter.queries (A2D / JHMDB / RefCOCO drivers): one query, the selected frame's mask at
    the original size, equal to postprocess of that frame (padding cropped, nearest resize)."""
    import torch.nn.functional as F

    from referformer.evaluation.drivers.segmenters import ClipRequest, ModelSegmenter
    from referformer.inference.predictor import Predictor
    from referformer.text import load_tokenizer, tokenize

    model = load_model(tiny_folder)
    tokenizer = load_tokenizer(tiny_folder / "tokenizer")
    torch.manual_seed(1)
    frames = torch.randn(3, 3, 40, 50)  # pads to 64 x 64
    request = ClipRequest("v", frames, frame_index=1, orig_size=(80, 100), sample_ids=(7, 8),
                          sentences=("the red circle", "a square"))
    ids, mask = tokenize(tokenizer, list(request.sentences))
    padded = F.pad(frames, (0, 14, 0, 24))[None]

    def frame_logits():
        with torch.inference_mode():
            return model.decode(model.encode_video(padded), model.encode_text(ids, mask))["seg_logits"][:, 1]

    # the random model says "foreground" everywhere: move the foreground bias to the median of
    # fg - bg, so that the masks have a shape (a mask resized by a wrong factor then differs)
    with torch.no_grad():
        seg = frame_logits()
        model.classifier[-1].bias[1] -= (seg[:, 1] - seg[:, 0])[:, :40, :50].median()
    seg = frame_logits()
    predictions = ModelSegmenter(Predictor(model, tokenizer)).queries(request)
    assert len(predictions) == 2
    for i, prediction in enumerate(predictions):
        assert prediction.masks.shape == (1, 80, 100) and prediction.scores.shape == (1,)
        expected = (seg[i, 1] > seg[i, 0])[:40, :50]
        assert 0.2 < expected.float().mean() < 0.8
        expected = F.interpolate(expected[None, None].float(), size=(80, 100), mode="nearest")[0] > 0.5
        assert torch.equal(prediction.masks, expected)


def test_init_from_a_torchvision_deeplabv3_state_dict(tmp_path):
    """--init with torchvision's COCO-style DeepLabv3 (21 classes, aux head): everything but the final
    conv and the aux head loads (checked on a ResNet-18-sized stand-in with torchvision's key names)."""
    from referformer.engine.checkpointing import load_initial_weights
    from referformer.models.deeplab import torchvision_deeplab_converter

    config = get_preset("refvos-tiny").config
    source = build_refvos(config)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("text_encoder.", "text_proj."))}
    state["classifier.4.weight"] = torch.randn(21, config.aspp_channels, 1, 1)
    state["classifier.4.bias"] = torch.randn(21)
    state["aux_classifier.0.weight"] = torch.randn(4, 256, 3, 3)
    torch.save({"model": state}, tmp_path / "deeplab.pth")
    target = build_refvos(config)
    missing, unexpected = load_initial_weights(target, tmp_path / "deeplab.pth", torchvision_deeplab_converter)
    assert unexpected == [] and "classifier.4.weight" in missing and "backbone.conv1.weight" not in missing
    assert torch.equal(target.state_dict()["backbone.layer4.1.conv2.weight"], state["backbone.layer4.1.conv2.weight"])
    # our own RefVOS checkpoints (2 classes) keep their classifier
    own = source.state_dict()
    assert torchvision_deeplab_converter(own).keys() == own.keys()
