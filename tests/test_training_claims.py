"""Every "same as the original" claim of the training code, checked against a stated answer.

Where ``../shared/reference`` states the original's numbers or formulas (key names and frozen
BatchNorm in ``model/``, sampling and augmentation in ``formats/DATASETS.md``), the tests read them
from there and skip with the reason where it is absent. The optimizer, schedule, clipping and
backbone-freezing rules are not in ``../shared``; those tests check the rules transcribed (in the
test, independently of our code) from the original ``main.py`` / ``opts.py`` / ``engine.py`` /
``models/backbone.py`` (docs/training.md, "Where each claim is checked").
The loss itself is checked term by term in tests/test_criterion_reference.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomCrop

from referformer.checkpoint import ours_to_official
from referformer.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Check,
    Compose,
    PhotometricDistort,
    RandomHorizontalFlip,
    RandomResize,
    RandomSelect,
    RandomSizeCrop,
    ToNormalizedTensor,
    image_train_transforms,
    video_train_transforms,
    video_val_transforms,
    wrap_to_uint8,
)
from referformer.engine.optim import (OptimizerConfig, build_optimizer, build_param_groups, build_scheduler,
                                     optimizer_names)
from referformer.engine.recipes import get_recipe
from referformer.engine.trainer import Trainer
from referformer.models import build_model
from referformer.presets import get_preset
from toy import ToyClips, ToyReferModel, toy_collate, toy_recipe

# ---- the original rules (main.py, opts.py, engine.py, models/backbone.py of wjn922/ReferFormer) ----------
ORIGINAL_LR = {"rest": 1e-4, "backbone": 5e-5, "text_encoder": 1e-5, "linear_proj": 1e-4 * 1.0}
ORIGINAL_KEYWORDS = {"backbone": ("backbone.0",), "text_encoder": ("text_encoder",),
                     "linear_proj": ("reference_points", "sampling_offsets")}
ORIGINAL_GROUP_ORDER = ("rest", "backbone", "text_encoder", "linear_proj")


def original_groups(official_name: str) -> list[str]:
    """The param_dicts of the original main.py a parameter lands in (by substring of its name)."""
    groups = [g for g, words in ORIGINAL_KEYWORDS.items() if any(w in official_name for w in words)]
    return groups or ["rest"]


def original_trainable(official_name: str, backbone: str, freeze_text_encoder: bool) -> bool:
    """requires_grad in the original: ResNet (BackboneBase, lr_backbone > 0) trains layer2-4 only;
    Swin / Video-Swin train everything; RoBERTa is frozen by --freeze_text_encoder."""
    if official_name.startswith("backbone.0.") and backbone.startswith("resnet"):
        return any(layer in official_name for layer in ("layer2", "layer3", "layer4"))
    if official_name.startswith("text_encoder."):
        return not freeze_text_encoder
    return True


def _spec_keys(shared_reference: Path, backbone: str, config: str) -> list[str]:
    tsv = shared_reference / "model" / f"keys_{backbone}{'_release' if config == 'release' else ''}.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


PRESETS = [("resnet50", "release"), ("resnet50", "default"), ("swin_t_p4w7", "release"),
           ("video_swin_t_p4w7", "release")]


@pytest.fixture(scope="module", params=PRESETS, ids=lambda p: f"{p[0]}-{p[1]}")
def official_model(request):
    """(backbone, config, our model on the meta device: names and requires_grad, no weights)."""
    backbone, config = request.param
    with torch.device("meta"):
        model = build_model(get_preset(f"{backbone}-{config}").config, init_weights=False)
    return backbone, config, model


def test_optimizer_groups_and_learning_rates_follow_the_original(shared_reference, official_model):
    backbone, config, model = official_model
    spec = set(_spec_keys(shared_reference, backbone, config))
    groups = build_param_groups(model, OptimizerConfig())
    assert [g["name"] for g in groups] == [n for n in ORIGINAL_GROUP_ORDER if n in {g["name"] for g in groups}]
    assert {g["name"]: g["lr"] for g in groups} == {g["name"]: ORIGINAL_LR[g["name"]] for g in groups}
    group_of = {id(p): g["name"] for g in groups for p in g["params"]}
    seen = set()
    for name, parameter in model.named_parameters():
        official = ours_to_official(name)
        assert official in spec, f"{official} is not an official key"
        expected = original_groups(official)
        assert len(expected) == 1, f"{official} would be in several groups of the original: {expected}"
        if parameter.requires_grad:
            assert group_of[id(parameter)] == expected[0], official
            seen.add(expected[0])
        else:
            assert id(parameter) not in group_of, f"frozen {official} is given to the optimizer"
    assert {g["name"] for g in groups} == seen  # no empty group
    optimizer = build_optimizer(model, OptimizerConfig())
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["weight_decay"] == 5e-4 and all(g["weight_decay"] == 5e-4 for g in optimizer.param_groups)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    assert OptimizerConfig().lr_drop == (6, 8) and OptimizerConfig().lr_gamma == 0.1
    assert {k: getattr(OptimizerConfig(), k) for k in optimizer_names("referformer")} == optimizer_names("referformer")


def test_frozen_parameters_follow_the_original(shared_reference, official_model):
    backbone, config, model = official_model
    freeze = get_preset(f"{backbone}-{config}").config.freeze_text_encoder
    assert freeze == (config == "release")  # ARCHITECTURE.md: --freeze_text_encoder in every official script
    for name, parameter in model.named_parameters():
        official = ours_to_official(name)
        assert parameter.requires_grad == original_trainable(official, backbone, freeze), official
    # ARCHITECTURE.md: the ResNet's FrozenBatchNorm2d keeps weight, bias and running stats as buffers
    buffers = {ours_to_official(n) for n, _ in model.named_buffers()}
    for key in _spec_keys(shared_reference, backbone, config):
        if key.startswith("backbone.") and key.endswith(".running_mean"):
            prefix = key[: -len("running_mean")]
            assert {prefix + "weight", prefix + "bias", prefix + "running_var", key} <= buffers, prefix
    text_keys = [k for k in _spec_keys(shared_reference, backbone, config) if "text_encoder" in k]
    assert all(k.startswith("text_encoder.") for k in text_keys)  # the freezing keyword hits RoBERTa only


# ---- schedule and clipping, through the Trainer --------------------------------------------------------
def _toy_trainer(out_dir: Path, **changes) -> Trainer:
    config = toy_recipe(device="cpu", precision="fp32", num_workers=0, **changes)
    return Trainer(config, lambda: ToyReferModel(num_layers=config.num_decoder_layers),
                   ToyClips(num_clips=8, num_frames=config.num_frames), out_dir, toy_collate, show_progress=False)


def test_lr_drop_is_multistep_once_per_epoch(tmp_path):
    # the original: MultiStepLR(optimizer, args.lr_drop) (gamma 0.1), lr_scheduler.step() after every epoch
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, OptimizerConfig())
    scheduler = build_scheduler(optimizer, OptimizerConfig())
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # (no gradients: a no-op) the epoch's steps come before the scheduler's
        scheduler.step()
    assert lrs == pytest.approx([1e-4] * 6 + [1e-5] * 2 + [1e-6] * 2, rel=1e-9)
    trainer = _toy_trainer(tmp_path, epochs=3, **{"optimizer.lr_drop": (1, 2)})
    trainer.fit()
    per_epoch = {}
    for row in trainer.history:
        per_epoch.setdefault(row["epoch"], set()).add(row["lr"])
    assert {e: sorted(v) for e, v in per_epoch.items()} == {
        0: [pytest.approx(1e-4)], 1: [pytest.approx(1e-5)], 2: [pytest.approx(1e-6)]}


@pytest.mark.parametrize("max_norm", [0.1, 1e-3, 0.0])
def test_gradient_clipping_of_the_total_norm(tmp_path, max_norm):
    # the original: clip_grad_norm_(model.parameters(), max_norm) when max_norm > 0, after backward
    assert get_recipe("ytvos-finetune").clip_max_norm == 0.1
    trainer = _toy_trainer(tmp_path, max_steps=1, clip_max_norm=max_norm)
    trainer.fit()
    before = trainer.history[-1]["grad_norm"]
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert before > 1e-3  # the toy gradients are large enough for 1e-3 to clip them
    if max_norm > 0:
        assert after == pytest.approx(before * min(1.0, max_norm / (before + 1e-6)), rel=1e-4)
    else:
        assert after == pytest.approx(before, rel=1e-5)


# ---- data: DATASETS.md sections 7 and 8 ------------------------------------------------------------------
def _describe(t):
    """A transform pipeline as nested tuples of its classes and parameters."""
    if isinstance(t, Compose):
        return ("Compose", [_describe(x) for x in t.transforms])
    if isinstance(t, RandomSelect):
        return ("RandomSelect", t.p, _describe(t.first), _describe(t.second))
    if isinstance(t, RandomHorizontalFlip):
        return ("Flip", t.p, "whole words" if t.swap_whole_words else "substring")
    if isinstance(t, PhotometricDistort):
        return ("Photometric", "clip" if t.clip else "wrap")
    if isinstance(t, RandomResize):
        return ("Resize", list(t.sizes), t.max_size)
    if isinstance(t, RandomSizeCrop):
        return ("Crop", t.min_size, t.max_size)
    if isinstance(t, Check):
        return ("Check",)
    if isinstance(t, ToNormalizedTensor):
        return ("Normalize", pytest.approx(t.mean.flatten().tolist()), pytest.approx(t.std.flatten().tolist()))
    return (type(t).__name__,)


SCALES = [288, 320, 352, 392, 416, 448, 480, 512]
NORMALIZE = ("Normalize", list(IMAGENET_MEAN), list(IMAGENET_STD))
# DATASETS.md section 7, make_coco_transforms("train", max_size=640) of transforms_video.py
VIDEO_TRAIN = ("Compose", [
    ("Flip", 0.5, "substring"), ("Photometric", "wrap"),
    ("RandomSelect", 0.5, ("Compose", [("Resize", SCALES, 640), ("Check",)]),
     ("Compose", [("Resize", [400, 500, 600], None), ("Crop", 384, 600), ("Resize", SCALES, 640), ("Check",)])),
    NORMALIZE])
VIDEO_VAL = ("Compose", [("Resize", [360], 640), NORMALIZE])
# DATASETS.md section 7, RefCOCO pre-training (transforms_image.py); the final Check is ours (it marks
# the target the original's crop drops, so the sample is redrawn as in the original)
IMAGE_TRAIN = ("Compose", [
    ("Flip", 0.5, "substring"),
    ("RandomSelect", 0.5, ("Resize", list(range(480, 769, 32)), 800),
     ("Compose", [("Resize", [400, 500, 600], None), ("Crop", 384, 600),
                  ("Resize", [296, 328, 360, 392, 416, 448, 480, 512], 640)])),
    ("Check",), NORMALIZE])


def test_default_pipelines_are_the_originals():
    assert _describe(video_train_transforms()) == VIDEO_TRAIN
    assert _describe(video_val_transforms()) == VIDEO_VAL
    assert _describe(image_train_transforms()) == IMAGE_TRAIN
    # the flip's caption swap is the original's substring swap unless asked otherwise
    random.seed(0)
    flip = RandomHorizontalFlip(p=1.0)
    frames = [Image.new("RGB", (4, 4))]
    target = {"caption": "the bright dog on the left @ home", "boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
              "masks": torch.zeros(1, 4, 4, dtype=torch.bool)}
    assert flip(frames, target)[1]["caption"] == "the bleft dog on the right right home"
    assert RandomHorizontalFlip(1.0, swap_whole_words=True)(frames, target)[1]["caption"] == (
        "the bright dog on the right @ home")


@pytest.fixture(scope="module")
def fixture_data(shared_reference: Path, tmp_path_factory) -> Path:
    """The format-exact synthetic datasets of ../shared/reference/formats/make_fixtures.py."""
    out = tmp_path_factory.mktemp("claims_fixtures")
    subprocess.run([sys.executable, str(shared_reference / "formats" / "make_fixtures.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out / "data"


def test_each_dataset_uses_the_original_pipeline(fixture_data):
    from referformer.data import build_dataset

    roots = {"ytvos": "ref-youtube-vos", "davis": "ref-davis", "a2d": "a2d_sentences"}
    for name, folder in roots.items():
        train = build_dataset(name, fixture_data / folder, "train")
        assert _describe(train.transforms) == VIDEO_TRAIN, name
    assert _describe(build_dataset("a2d", fixture_data / "a2d_sentences", "test").transforms) == VIDEO_VAL
    assert _describe(build_dataset("jhmdb", fixture_data / "jhmdb_sentences", "test").transforms) == VIDEO_VAL
    coco = fixture_data / "coco"
    assert _describe(build_dataset("refcoco", coco, "train").transforms) == IMAGE_TRAIN
    clips = build_dataset("refcoco", coco, "train", num_frames=5)
    assert _describe(clips.transforms) == VIDEO_TRAIN  # joint training: pseudo-clips, video transforms


def _datasets_md_train_sample(frame_id: int, length: int, num_frames: int) -> list[int]:
    """DATASETS.md section 8 (A2D train = the Ref-YouTube-VOS local + global sampling), Python's random."""
    sample = [frame_id]
    before, after = random.randint(1, 3), random.randint(1, 3)
    sample += [max(0, frame_id - before), min(length - 1, frame_id + after)]
    if num_frames > 3:
        pool = list(range(0, min(sample))) + list(range(max(sample), length))
        n = num_frames - 3
        if len(pool) > n:
            sample += random.sample(pool, n)
        elif length >= n:
            sample += random.sample(range(length), n)
        else:
            sample += random.sample(range(length), n - length) + list(range(length))
    return sorted(sample)


def test_a2d_training_clip_and_annotated_frame_follow_datasets_md(fixture_data):
    from referformer.data.a2d import A2DSentences
    from referformer.data.io import VideoClip

    dataset = A2DSentences(fixture_data / "a2d_sentences", "train", transforms=None, num_frames=5)
    assert len(dataset) > 0
    for index, (_, video_id, frame_idx, _) in enumerate(dataset.samples):
        length = len(VideoClip(dataset.videos_dir / f"{video_id}.mp4"))
        for seed in range(5):
            random.seed(seed)
            expected = _datasets_md_train_sample(frame_idx - 1, length, 5)
            random.seed(seed)
            _, target = dataset.load(index)
            assert target["frames_idx"].tolist() == expected[:5]
            assert target["valid_indices"].tolist() == [expected.index(frame_idx - 1)]  # first occurrence
            assert target["masks"].shape[0] == 1 and target["boxes"].shape == (1, 4)


def _datasets_md_photometric(image: np.ndarray) -> np.ndarray:
    """DATASETS.md section 7 PhotometricDistort of one frame (numpy's global RNG), before the uint8 cast."""
    img = image.astype(np.float32)
    if np.random.randint(2):
        img += np.random.uniform(-32, 32)

    def contrast(x):
        if np.random.randint(2):
            x *= np.random.uniform(0.5, 1.5)
        return x

    def saturation_hue(x):
        x = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        if np.random.randint(2):
            x[:, :, 1] *= np.random.uniform(0.5, 1.5)
        if np.random.randint(2):
            x[:, :, 0] += np.random.uniform(-18, 18)
            x[:, :, 0][x[:, :, 0] > 360.0] -= 360.0
            x[:, :, 0][x[:, :, 0] < 0.0] += 360.0
        return cv2.cvtColor(x, cv2.COLOR_HSV2BGR)

    img = saturation_hue(contrast(img)) if np.random.randint(2) else contrast(saturation_hue(img))
    if np.random.randint(2):
        perms = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
        img = img[:, :, perms[np.random.randint(6)]]
    return img


def test_photometric_distortion_follows_datasets_md():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(3)]
    for seed in range(40):
        np.random.seed(seed)
        expected = [_datasets_md_photometric(f) for f in frames]
        np.random.seed(seed)
        ours, _ = PhotometricDistort()([Image.fromarray(f) for f in frames], {})
        for got, want in zip(ours, expected):
            np.testing.assert_array_equal(np.asarray(got), wrap_to_uint8(want))
            inside = (want >= 0) & (want < 256)  # where the unclipped cast is defined on every platform
            np.testing.assert_array_equal(np.asarray(got)[inside], want[inside].astype(np.uint8))


def test_random_size_crop_follows_datasets_md():
    frames = [Image.new("RGB", (700, 520)) for _ in range(2)]
    boxes = torch.tensor([[10.0, 20.0, 690.0, 500.0], [600.0, 400.0, 650.0, 450.0]])
    target = {"boxes": boxes, "masks": torch.ones(2, 520, 700, dtype=torch.bool), "size": torch.tensor([520, 700])}
    for seed in range(20):
        random.seed(seed)
        torch.manual_seed(seed)
        w, h = random.randint(384, min(700, 600)), random.randint(384, min(520, 600))
        top, left, ch, cw = RandomCrop.get_params(frames[0], [h, w])  # one region for the clip (torch RNG)
        random.seed(seed)
        torch.manual_seed(seed)
        out_frames, out = RandomSizeCrop(384, 600)(frames, target)
        assert (ch, cw) == (h, w) and all(f.size == (w, h) for f in out_frames)
        shifted = boxes - torch.tensor([left, top, left, top], dtype=torch.float32)
        expected = torch.min(shifted.reshape(-1, 2, 2), torch.tensor([w, h], dtype=torch.float32)).clamp(min=0)
        assert torch.equal(out["boxes"], expected.reshape(-1, 4))
        assert out["masks"].shape == (2, h, w) and out["size"].tolist() == [h, w]
