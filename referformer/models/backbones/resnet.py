"""ResNet backbones with frozen batch norm (torchvision's ResNet + ``torchvision.ops.FrozenBatchNorm2d``).

torchvision's FrozenBatchNorm2d computes exactly what the original's did (eps 1e-5,
``x * w / sqrt(rv + eps) + (b - rm * scale)``) and drops an incoming ``num_batches_tracked``.
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

RESNET_CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
}


class ResNetBackbone(nn.Module):
    """Stages ``layer1..layer4`` of a ResNet (strides 4, 8, 16, 32); keys ``body.*``.

    Only the parameters of layer2-4 are trainable when ``train_backbone`` (the original's rule).
    """

    def __init__(self, name: str, train_backbone: bool = True, dilation: bool = False) -> None:
        super().__init__()
        if name not in RESNET_CHANNELS:
            raise ValueError(f"unknown ResNet {name!r}; choose one of {sorted(RESNET_CHANNELS)}")
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d,
                                                   replace_stride_with_dilation=[False, False, dilation])
        for pname, p in resnet.named_parameters():
            if not train_backbone or ("layer2" not in pname and "layer3" not in pname and "layer4" not in pname):
                p.requires_grad_(False)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer1": "0", "layer2": "1",
                                                                   "layer3": "2", "layer4": "3"})
        self.num_channels: list[int] = list(RESNET_CHANNELS[name])
        self.strides = [4, 8, 16, 32 // (2 if dilation else 1)]

    def forward(self, frames: Tensor, num_frames: int | None = None) -> list[Tensor]:
        """frames: [B*T, 3, H, W] normalised -> 4 maps [B*T, C_l, h_l, w_l] (``num_frames`` unused: per-frame)."""
        return list(self.body(frames).values())
