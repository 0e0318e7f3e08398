"""The two encoders of the space-time-memory propagator: keys of frames, values of (frame, mask) pairs.

Both are torchvision ResNet-18 trunks (random initialisation: no ImageNet weights can be downloaded
here) cut at the key stride: ``layer2`` for stride 8, ``layer3`` for stride 16. Shapes are for a
batch of ``B`` frames of ``H x W`` pixels (multiples of the key stride) and ``h = H / stride``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

__all__ = ["KeyEncoder", "ValueEncoder", "trunk_channels"]

# channels of the ResNet-18 stages, by stride
_CHANNELS = {4: 64, 8: 128, 16: 256}


def trunk_channels(stride: int) -> int:
    """Channels of the ResNet-18 feature at ``stride`` (4, 8 or 16)."""
    return _CHANNELS[stride]


class _Trunk(nn.Module):
    """ResNet-18 stem and stages up to ``stride``; ``in_channels`` other than 3 get a new first conv."""

    def __init__(self, stride: int, in_channels: int = 3) -> None:
        super().__init__()
        net = resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)  # stride 4
        stages = [net.layer1, net.layer2] + ([net.layer3] if stride == 16 else [])
        self.stages = nn.ModuleList(stages)  # strides 4, 8 (, 16)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x`` ``[B, C, H, W]`` -> the features at strides 4, 8 (, 16)."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class KeyEncoder(nn.Module):
    """Frame -> key ``[B, key_dim, h, w]`` and the trunk features (for the values and the decoder).

    ``features[i]`` is the stride ``4 * 2**i`` feature (``[B, 64, H/4, W/4]``, ``[B, 128, H/8, W/8]``
    and, for stride 16, ``[B, 256, H/16, W/16]``); the last one is at the key stride.
    """

    def __init__(self, stride: int, key_dim: int) -> None:
        super().__init__()
        self.trunk = _Trunk(stride)
        self.key_proj = nn.Conv2d(trunk_channels(stride), key_dim, kernel_size=3, padding=1)

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``images``: ImageNet-normalised ``[B, 3, H, W]`` -> (key, features)."""
        features = self.trunk(images)
        return self.key_proj(features[-1]), features


class ValueEncoder(nn.Module):
    """(frame, object mask, other objects' mask) -> value ``[B, K, value_dim, h, w]``.

    The trunk reads RGB + the object's probability + the sum of the other objects' probabilities
    (5 channels, as STM), its stride feature is fused with the key encoder's feature of the same frame
    (as XMem), then projected to ``value_dim``.
    """

    def __init__(self, stride: int, value_dim: int) -> None:
        super().__init__()
        self.trunk = _Trunk(stride, in_channels=5)
        channels = trunk_channels(stride)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * channels, value_dim, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(value_dim, value_dim, kernel_size=3, padding=1),
        )

    def forward(self, images: Tensor, key_feature: Tensor, masks: Tensor, others: Tensor) -> Tensor:
        """``images`` ``[B, 3, H, W]``; ``key_feature`` ``[B, C, h, w]`` (the key encoder's last feature);
        ``masks`` / ``others`` ``[B, K, H, W]`` probabilities in [0, 1]. Returns ``[B, K, value_dim, h, w]``."""
        b, k = masks.shape[:2]
        x = torch.cat([images[:, None].expand(-1, k, -1, -1, -1), masks[:, :, None], others[:, :, None]], dim=2)
        feature = self.trunk(x.flatten(0, 1))[-1]  # [B*K, C, h, w]
        shared = key_feature[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        value = self.fuse(torch.cat([feature, shared], dim=1))
        return value.view(b, k, *value.shape[1:])
