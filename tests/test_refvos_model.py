"""RefVOS model: config, shapes, torchvision parity, text conditioning, freezing, post-processing, overfitting."""

from __future__ import annotations

import math

import pytest
import torch

from referformer.config import BertTextConfig, RefVOSConfig
from referformer.engine.refvos_loss import RefVOSCriterion
from referformer.errors import UserError
from referformer.models.deeplab import build_deeplab_backbone
from referformer.models.refvos import build_refvos, postprocess_refvos_clip


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_text(vocab_size: int = 16, dropout: float = 0.1) -> BertTextConfig:
    return BertTextConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def tiny_config(**changes) -> RefVOSConfig:
    return RefVOSConfig(backbone="resnet18", aspp_channels=32, text_encoder=tiny_text()).replace(**changes)


def test_config_round_trip_and_defaults():
    config = RefVOSConfig()
    assert (config.backbone, config.output_stride, tuple(config.atrous_rates), config.aspp_channels) == (
        "resnet101", 8, (12, 24, 36), 256)
    assert (config.text_encoder.hidden_size, config.text_encoder.num_hidden_layers) == (768, 12)
    d = config.to_dict()
    assert d["model_type"] == "refvos" and RefVOSConfig.model_type == "refvos"
    assert RefVOSConfig.from_dict(d) == config
    assert RefVOSConfig.from_json(config.to_json()) == config
    tiny = tiny_config(freeze_text_encoder=True, sentence_embedding="pooler")
    assert RefVOSConfig.from_dict(tiny.to_dict()) == tiny


@pytest.mark.parametrize("changes, message", [
    ({"backbone": "resnet9"}, "backbone"),
    ({"output_stride": 4}, "output_stride"),
    ({"sentence_embedding": "mean"}, "sentence_embedding"),
])
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(UserError, match=message):
        RefVOSConfig().replace(**changes).validate()


def test_config_from_dict_rejects_unknown_and_wrong_type():
    with pytest.raises(UserError, match="hidden_dim"):
        RefVOSConfig.from_dict({"hidden_dim": 256})
    with pytest.raises(UserError, match="model_type"):
        RefVOSConfig.from_dict({"model_type": "referformer"})


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_basic_block_backbone_reaches_the_output_stride(output_stride):
    backbone, channels = build_deeplab_backbone("resnet18", output_stride)
    with torch.no_grad():
        out = backbone.eval()(torch.zeros(1, 3, 64, 96))["out"]
    assert out.shape == (1, channels, 64 // output_stride, 96 // output_stride)


def test_deeplab_part_matches_torchvision_deeplabv3_resnet101():
    """backbone.* / classifier.* have torchvision's deeplabv3_resnet101 keys and shapes (OS 8, ASPP 12/24/36)."""
    from torchvision.models.segmentation import deeplabv3_resnet101

    with torch.device("meta"):
        reference = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)
        ours = build_refvos(RefVOSConfig(text_encoder=tiny_text()))
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    got = {k: v.shape for k, v in ours.state_dict().items() if k.startswith(("backbone.", "classifier."))}
    assert got == expected
    rates = [branch[0].dilation[0] for branch in ours.classifier[0].convs[1:4]]
    assert rates == [12, 24, 36]
    assert [m.dilation[0] for m in (ours.backbone.layer3[1].conv2, ours.backbone.layer4[1].conv2)] == [2, 4]


def test_full_resnet101_forward_shape():
    torch.manual_seed(0)
    model = build_refvos(RefVOSConfig(text_encoder=tiny_text())).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad():
        out = model(torch.randn(1, 1, 3, 64, 48), ids, torch.ones_like(ids))
    assert out["seg_logits"].shape == (1, 1, 2, 64, 48)
    assert torch.isfinite(out["seg_logits"]).all()


def test_tiny_forward_backward_shapes_and_padding():
    torch.manual_seed(0)
    model = build_refvos(tiny_config())
    frames = torch.randn(2, 3, 3, 64, 96)
    padding = torch.zeros(2, 3, 64, 96, dtype=torch.bool)
    padding[1, :, 40:] = True
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = ids.ne(0).long()
    out = model(frames, ids, mask, padding_mask=padding, image_sizes=torch.tensor([[64, 96], [40, 96]]))
    assert out["seg_logits"].shape == (2, 3, 2, 64, 96)
    masks = torch.zeros(3, 40, 96, dtype=torch.bool)
    masks[:, 10:20, 10:30] = True
    targets = [{"masks": torch.zeros(3, 64, 96, dtype=torch.bool), "valid": torch.zeros(3)},
               {"masks": masks, "valid": torch.ones(3)}]
    criterion = RefVOSCriterion()
    loss = criterion.total(criterion(out, targets))
    loss.backward()
    assert math.isfinite(loss.item())
    for name in ("backbone.conv1.weight", "classifier.0.convs.0.0.weight", "classifier.4.weight",
                 "text_proj.weight", "text_encoder.embeddings.word_embeddings.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_decode_shares_one_clip_between_sentences():
    torch.manual_seed(0)
    model = build_refvos(tiny_config()).eval()
    frames = torch.randn(1, 2, 3, 32, 32)
    ids = torch.tensor([[2, 5, 3], [2, 6, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        shared = model.decode(model.encode_video(frames), model.encode_text(ids, mask))["seg_logits"]
        separate = model(frames.expand(2, -1, -1, -1, -1), ids, mask)["seg_logits"]
    assert shared.shape == (2, 2, 2, 32, 32)
    torch.testing.assert_close(shared, separate, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(shared[0], shared[1])  # the sentence changes the prediction


def test_sentence_embedding_choice():
    cls_model = build_refvos(tiny_config()).eval()
    pooler_model = build_refvos(tiny_config(sentence_embedding="pooler")).eval()
    assert cls_model.text_encoder.pooler is None  # unused parameters would stall DDP
    assert pooler_model.text_encoder.pooler is not None
    ids = torch.tensor([[2, 5, 3]])
    out = pooler_model.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(pooler_model.encode_text(ids, torch.ones_like(ids)), pooler_model.text_proj(out.pooler_output))
    out = cls_model.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(cls_model.encode_text(ids, torch.ones_like(ids)),
                               cls_model.text_proj(out.last_hidden_state[:, 0]))


def test_frozen_bert_gets_no_gradient():
    torch.manual_seed(0)
    model = build_refvos(tiny_config(freeze_text_encoder=True))
    ids = torch.tensor([[2, 5, 3]])
    out = model(torch.randn(1, 2, 3, 32, 32), ids, torch.ones_like(ids))
    out["seg_logits"][:, :, 1].mean().backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.text_proj.weight.grad is not None and model.backbone.conv1.weight.grad is not None


def test_frozen_backbone_option():
    model = build_refvos(tiny_config(train_backbone=False))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_training_a_single_frame_is_a_clear_error():
    model = build_refvos(tiny_config()).train()
    ids = torch.tensor([[2, 5, 3]])
    with pytest.raises(UserError, match="at least 2 frames"):
        model(torch.randn(1, 1, 3, 32, 32), ids, torch.ones_like(ids))


def test_postprocess_hand_computed():
    # 1 frame, padded 4x4, real image 2x3; fg - bg logits chosen by hand (bg logit 0).
    fg = torch.tensor([[2.0, 0.0, -1.0, 9.0],
                       [3.0, -2.0, 1.0, 9.0],
                       [9.0, 9.0, 9.0, 9.0],
                       [9.0, 9.0, 9.0, 9.0]])
    logits = torch.stack([torch.zeros(4, 4), fg])[None]  # [T=1, 2, 4, 4]
    pred = postprocess_refvos_clip(logits, image_size=(2, 3), orig_size=(2, 3))
    expected_mask = torch.tensor([[True, False, False], [True, False, True]])
    assert torch.equal(pred.masks[0], expected_mask)
    torch.testing.assert_close(pred.mask_logits[0], fg[:2, :3])
    expected_score = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(3.0))
                      + torch.sigmoid(torch.tensor(1.0))) / 3
    torch.testing.assert_close(pred.scores, expected_score[None])
    torch.testing.assert_close(pred.query_scores, expected_score[None])
    assert pred.query == 0 and pred.logits.shape == (1, 1)
    torch.testing.assert_close(pred.boxes, torch.tensor([[0.0, 0.0, 2.0, 1.0]]))  # inclusive x0, y0, x1, y1
    torch.testing.assert_close(pred.boxes_cxcywh, torch.tensor([[1.0 / 3, 0.25, 2.0 / 3, 0.5]]))


def test_postprocess_empty_mask_and_resize():
    logits = torch.zeros(2, 2, 8, 8)
    logits[:, 1] = -3.0
    logits[1, 1, :4, :4] = 3.0
    pred = postprocess_refvos_clip(logits, image_size=(8, 8), orig_size=(16, 16))
    assert pred.masks.shape == (2, 16, 16)
    assert not pred.masks[0].any()
    torch.testing.assert_close(pred.scores[0], torch.sigmoid(torch.tensor(-3.0)))  # best fg prob, below 0.5
    assert torch.equal(pred.boxes[0], torch.zeros(4))
    assert pred.masks[1, :7, :7].all() and not pred.masks[1, 9:].any()


def _two_square_clip(size: int = 32, square: int = 16):
    """2 frames with a red and a green square each (grid-aligned); sentence 0 = red, sentence 1 = green."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, size, size, generator=generator) * 0.2
    masks = torch.zeros(2, 2, size, size, dtype=torch.bool)  # [sentence, frame, H, W]
    q = size // 4
    corners = [[(0, 0), (2 * q, q)], [(2 * q, 2 * q), (0, 2 * q)]]
    for sentence, channel in enumerate((0, 1)):
        for frame in range(2):
            y, x = corners[sentence][frame]
            frames[frame, :, y:y + square, x:x + square] = -1.0
            frames[frame, channel, y:y + square, x:x + square] = 2.0
            masks[sentence, frame, y:y + square, x:x + square] = True
    return frames, masks


def test_tiny_refvos_overfits_a_clip_following_the_sentence():
    torch.manual_seed(0)
    # ResNet-18 kept at its random weights (forward only: the test stays a few seconds on a busy CPU).
    model = build_refvos(tiny_config(train_backbone=False, text_encoder=tiny_text(dropout=0.0)))
    frames, masks = _two_square_clip()
    ids = torch.tensor([[2, 5, 3], [2, 6, 3]])  # "red", "green"
    attention = torch.ones_like(ids)
    targets = [{"masks": masks[i], "valid": torch.ones(2)} for i in range(2)]
    criterion = RefVOSCriterion()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(100):
        outputs = model.decode(model.encode_video(frames), model.encode_text(ids, attention))
        loss = criterion.total(criterion(outputs, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = sum(losses[-5:]) / 5  # ASPP's dropout makes single steps noisy
    assert losses[0] / final >= 10, (losses[0], final)
    model.eval()
    with torch.no_grad():
        outputs = model.decode(model.encode_video(frames), model.encode_text(ids, attention))
    for sentence in range(2):
        prediction = postprocess_refvos_clip(outputs["seg_logits"][sentence], (32, 32), (32, 32))
        iou = (prediction.masks & masks[sentence]).sum() / (prediction.masks | masks[sentence]).sum()
        assert iou > 0.9, (sentence, float(iou))
        other = masks[1 - sentence]  # the other sentence's square is not segmented: the text is used
        assert (prediction.masks & other).sum() / other.sum() < 0.1
