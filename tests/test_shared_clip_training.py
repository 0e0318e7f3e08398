"""Several sentences per clip in training: the dataset, the collate and ``forward(clip_index=...)``."""

from __future__ import annotations

import random

import pytest
import torch

from referformer.data import build_dataset
from referformer.data.seeding import isolated_rng
from referformer.data.shared_clips import SharedClipSentences
from referformer.engine.wiring import ReferFormerCollate, SharedClipCollate
from referformer.models import build_model
from referformer.presets import tiny_config
from referformer.synthetic.tokenizer import synthetic_vocab_size
from referformer.engine.synthetic_tiny import ResampledDataset, synthetic_train_transforms
from referformer.text import load_tokenizer


@pytest.fixture(scope="module")
def root(make_synthetic_root):
    return make_synthetic_root(seed=11, num_videos=2, splits=["train"])


@pytest.fixture(scope="module")
def clips(root):
    return build_dataset("ytvos", root, "train", num_frames=3, categories=None, transforms=synthetic_train_transforms())


def test_sentences_of_one_clip_share_frames_and_augmentation(clips):
    shared = SharedClipSentences(clips, sentences=4)
    assert len(shared) == len(clips)
    for index in range(len(shared)):
        with isolated_rng(index):
            frames, targets = shared[index]
        assert 1 <= len(targets) <= 4
        assert len({t["video_id"] for t in targets}) == 1  # one video
        assert len({tuple(t["frames_idx"].tolist()) for t in targets}) == 1  # the same frames
        assert len({t["exp_id"] for t in targets}) == len(targets)  # different expressions
        assert all(t["masks"].shape[-2:] == frames.shape[-2:] and t["valid"].any() for t in targets)
    with pytest.raises(ValueError):
        SharedClipSentences(clips, sentences=0)


def test_companions_name_other_objects_first(clips):
    objects = {(ce.expression.video_id, ce.expression.exp_id): ce.expression.obj_ids for ce in clips.expressions}
    pairs = SharedClipSentences(clips, sentences=2)
    checked = 0
    for index in range(len(pairs)):
        with isolated_rng(index):
            _, targets = pairs[index]
        if len(targets) == 2:  # (a companion whose object is hidden in the clip is left out)
            first, second = (objects[(t["video_id"], t["exp_id"])] for t in targets)
            assert first != second
            checked += 1
    assert checked > len(pairs) // 2


def test_resampled_items_are_reproducible(clips):
    shared = ResampledDataset(SharedClipSentences(clips, sentences=3), 5)  # as the synthetic recipe
    assert len(shared) == 5
    with isolated_rng(7):
        a = shared[0]
    with isolated_rng(7):
        b = shared[0]
    assert torch.equal(a[0], b[0]) and [t["exp_id"] for t in a[1]] == [t["exp_id"] for t in b[1]]


def test_clip_index_forward_equals_repeating_the_clip(root, clips):
    """Encoding each clip once and decoding its sentences gives the same outputs (and gradients) as
    one (clip, sentence) pair per batch row, the original layout."""
    torch.manual_seed(0)
    config = tiny_config()
    config.text_encoder.vocab_size = synthetic_vocab_size()
    model = build_model(config.replace(freeze_text_encoder=False)).eval()  # no dropout: comparable outputs
    tokenizer = load_tokenizer(root / "tokenizer")
    shared = SharedClipSentences(clips, sentences=3)
    random.seed(0)
    with isolated_rng(1):
        items = [shared[0], shared[len(shared) - 1]]
    inputs, targets = SharedClipCollate(tokenizer)(items)
    s = len(targets)
    assert inputs["frames"].shape[0] == 2 and inputs["input_ids"].shape[0] == s
    assert inputs["clip_index"].tolist() == [c for c, (_, ts) in enumerate(items) for _ in ts]

    pairs = [(frames, t) for frames, ts in items for t in ts]
    plain, plain_targets = ReferFormerCollate(tokenizer)(pairs)
    assert [t["exp_id"] for t in plain_targets] == [t["exp_id"] for t in targets]
    out_shared = model(**inputs)
    out_plain = model(**plain)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        assert out_shared[key].shape[0] == s
        torch.testing.assert_close(out_shared[key], out_plain[key], atol=1e-5, rtol=1e-4)
    grads = []
    for out in (out_shared, out_plain):
        model.zero_grad()
        (out["pred_masks"].sum() + out["pred_logits"].sum()).backward()
        grads.append(torch.cat([model.backbone.body.layer2[0].conv1.weight.grad.flatten(),
                                model.text_encoder.embeddings.word_embeddings.weight.grad.flatten()]))
    scale = grads[1].abs().max()  # float32 sums in a different order: compare relative to the largest
    torch.testing.assert_close(grads[0] / scale, grads[1] / scale, atol=1e-5, rtol=0)
