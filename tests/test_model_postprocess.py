"""Pre/post-processing against hand-computed cases, the tokenizer, and the end-to-end API on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from referformer.errors import UserError
from referformer.inference.api import segment_video
from referformer.inference.postprocess import cxcywh_to_xyxy_pixels, postprocess_clip, select_query
from referformer.inference.preprocess import preprocess_frames, resized_size
from referformer.models import build_model
from referformer.presets import get_preset
from referformer.text import load_tokenizer, normalize_sentence, tokenize


def test_select_query_mean_over_frames():
    # query 1 wins on average although query 0 is best in frame 0
    logits = torch.logit(torch.tensor([[[0.9], [0.6]], [[0.1], [0.7]]]))  # [T=2, Q=2, K=1]
    q, scores = select_query(logits)
    assert q == 1
    torch.testing.assert_close(scores, torch.tensor([0.5, 0.65]))


def test_postprocess_clip_hand_case():
    t, q = 2, 2
    logits = torch.tensor([[[-1.0], [2.0]], [[-1.0], [2.0]]])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).expand(t, q, 4)
    masks = torch.full((t, q, 2, 2), -5.0)
    masks[:, 1, 0, 0] = 5.0  # chosen query: top-left cell positive
    pred = postprocess_clip(logits, boxes, masks, (4, 8))
    assert pred.query == 1
    assert pred.masks.shape == (2, 4, 8) and pred.masks.dtype == torch.bool
    # bilinear, align_corners=False, 2x2 -> 4x8: value 5 at top-left quadrant corner, -5 elsewhere
    assert pred.masks[0, 0, 0] and pred.masks[0, 0, 3] and not pred.masks[0, 3, 7] and not pred.masks[0, 0, 4]
    assert pred.mask_logits[0, 0, 0] == 5.0
    assert pred.boxes[0].tolist() == [2.0, 1.0, 6.0, 3.0]  # xyxy pixels of a 4x8 frame
    torch.testing.assert_close(pred.scores, torch.sigmoid(torch.tensor([2.0, 2.0])))


def test_box_conversion():
    b = torch.tensor([0.25, 0.5, 0.5, 1.0])
    assert cxcywh_to_xyxy_pixels(b, (100, 200)).tolist() == [0.0, 0.0, 100.0, 100.0]


@pytest.mark.parametrize("h,w", [(720, 1280), (480, 640), (500, 333), (360, 360), (101, 997)])
def test_resize_matches_torchvision_resize_360(h, w):
    img = Image.new("RGB", (w, h))
    out = T.Resize(360)(img)
    assert resized_size(h, w) == (out.height, out.width)


def test_preprocess_matches_original_transform():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    original = T.Compose([T.Resize(360), T.ToTensor(),
                          T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(Image.fromarray(arr))
    ours, orig_size = preprocess_frames([arr, torch.from_numpy(arr).permute(2, 0, 1)])
    assert orig_size == (90, 120)
    assert ours.shape == (2, 3, 360, 480)
    assert torch.equal(ours[0], original) and torch.equal(ours[1], original)


def test_normalize_sentence():
    assert normalize_sentence("  A Dog\tholding   a WHITE umbrella ") == "a dog holding a white umbrella"


def test_missing_tokenizer_is_one_line_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="huggingface-cli download roberta-base") as info:
        load_tokenizer("referformer-test/no-such-tokenizer")
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a dog holding a white umbrella", "the person on the left", "a red car"], trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.decoder = decoders.ByteLevel()
    d = tmp_path_factory.mktemp("tok")
    tok.save(str(d / "tokenizer.json"))
    return d


def test_tokenize_roberta_layout(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids, mask = tokenize(tok, ["A dog", "the person on the left"])
    assert ids[0, 0] == 0 and ids[1, 0] == 0
    n0 = int(mask[0].sum())
    assert ids[0, n0 - 1] == 2 and (ids[0, n0:] == 1).all() and (mask[0, n0:] == 0).all()
    assert mask[1].all()


def test_segment_video_end_to_end(tiny_tokenizer_dir):
    torch.manual_seed(0)
    model = build_model(get_preset("tiny").config).eval()
    frames = [np.full((45, 60, 3), 40 * i, dtype=np.uint8) for i in range(3)]
    results = segment_video(model, frames, ["a dog", "a red car", "the person"], tokenizer=tiny_tokenizer_dir,
                            short_side=64, sentence_batch_size=2, return_logits=True)
    assert [r.sentence for r in results] == ["a dog", "a red car", "the person"]
    for r in results:
        assert r.masks.shape == (3, 45, 60) and r.masks.dtype == torch.bool
        assert r.boxes.shape == (3, 4) and r.scores.shape == (3,)
        assert 0 <= r.query < 3
        assert torch.equal(r.masks, r.mask_logits.sigmoid() > 0.5)
