"""DeepLabv3 parts of RefVOS, built as torchvision builds ``deeplabv3_resnet*`` (random weights).

The backbone is a torchvision ResNet dilated to an output stride of 8 / 16 / 32, the head
torchvision's ``DeepLabHead`` (ASPP, conv3x3-BN-ReLU, conv1x1) with a 2-class output: channel
:data:`FOREGROUND` is the referred object, the other one the background. Module indices and key
names equal torchvision's, so its state dicts load as they are (:func:`torchvision_deeplab_converter`
only drops what RefVOS has not).
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from referformer.config import REFVOS_OUTPUT_STRIDES

__all__ = [
    "FOREGROUND",
    "NUM_CLASSES",
    "build_deeplab_backbone",
    "build_deeplab_head",
    "torchvision_deeplab_converter",
]

NUM_CLASSES = 2  # channel 0 = background, channel 1 = foreground (the referred object)
FOREGROUND = 1

# torchvision's replace_stride_with_dilation for layer2, layer3, layer4
_DILATION_FLAGS = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}
assert tuple(_DILATION_FLAGS) == REFVOS_OUTPUT_STRIDES


def _dilate_basic_block_resnet(resnet: nn.Module, flags: tuple[bool, bool, bool]) -> None:
    """Replace strides by dilation in a ResNet-18/34, as torchvision does for Bottleneck ResNets.

    Written by hand because torchvision's ``BasicBlock`` refuses dilation > 1; it mirrors
    ``ResNet._make_layer(dilate=True)``: the layer's first block keeps the previous dilation,
    the later blocks use the new one, and no conv strides any more.
    """
    dilation = 1
    for layer, dilate in zip((resnet.layer2, resnet.layer3, resnet.layer4), flags):
        if not dilate:
            continue
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(layer):
            d = previous if index == 0 else dilation
            for conv in (block.conv1, block.conv2):
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def build_deeplab_backbone(name: str, output_stride: int = 8) -> tuple[nn.Module, int]:
    """A torchvision ResNet (random weights, nothing downloaded) dilated to ``output_stride``.

    Returns ``(backbone, channels)``: ``backbone(x)["out"]`` is layer4, ``[N, channels, H/os, W/os]``.
    Same construction as ``torchvision.models.segmentation.deeplabv3_resnet101`` (OS 8 =
    ``replace_stride_with_dilation=[False, True, True]``).
    """
    flags = _DILATION_FLAGS[output_stride]
    constructor = getattr(torchvision.models, name)
    if name in ("resnet50", "resnet101"):
        resnet = constructor(weights=None, replace_stride_with_dilation=list(flags))
        channels = 2048
    else:
        resnet = constructor(weights=None)
        _dilate_basic_block_resnet(resnet, flags)
        channels = 512
    return IntermediateLayerGetter(resnet, return_layers={"layer4": "out"}), channels


def build_deeplab_head(in_channels: int, atrous_rates: tuple[int, ...], channels: int = 256) -> nn.Sequential:
    """torchvision's ``DeepLabHead`` without the final conv's class count fixed: ASPP, conv3x3-BN-ReLU,
    conv1x1 -> 2 classes. Same module indices (``classifier.0`` = ASPP ... ``classifier.4``); built here
    only because ``DeepLabHead`` hard-codes 256 channels (tiny test models use fewer)."""
    return nn.Sequential(
        ASPP(in_channels, list(atrous_rates), out_channels=channels),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, NUM_CLASSES, 1),
    )


def torchvision_deeplab_converter(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision ``deeplabv3_resnet*`` state dict -> RefVOS initial weights (``--init``): drops the
    auxiliary FCN head (``aux_classifier.*``) and a final classifier conv whose class count is not 2
    (COCO/VOC weights have 21); every other key is already RefVOS's. Our own checkpoints pass unchanged."""
    final = "classifier.4."
    drop_final = any(k.startswith(final) and v.shape[0] != NUM_CLASSES for k, v in state.items())
    return {k: v for k, v in state.items()
            if not k.startswith("aux_classifier.") and not (drop_final and k.startswith(final))}
