"""F_Seg: the instance segmenter that proposes mask candidates on key frames.

* :class:`InstanceSegmenter`: what any segmenter implements (images in, masks and scores out), so
  another model (HTC, CondInst, a SAM-based proposer) can stand in;
* :func:`build_mask_rcnn`: torchvision's ``MaskRCNN``, class-agnostic (2 classes: background,
  object), on a ResNet (torchvision) or EfficientNet-Lite0 (timm) trunk under a feature pyramid,
  randomly initialised, the sizes of a :class:`~referformer.models.tracklets.config.SegmenterConfig`;
* :class:`MaskRCNNSegmenter`: a Mask R-CNN behind the protocol (eval mode, score threshold, masks
  thresholded, candidates by decreasing score);
* :func:`coco_mask_rcnn`: torchvision's COCO-trained ``maskrcnn_resnet50_fpn`` (downloaded by
  torchvision on first use; only when a user asks for it, never at import or in tests). Its 91 COCO
  classes are ignored: every detection is a class-agnostic candidate.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from referformer.models.tracklets.config import SegmenterConfig

__all__ = ["InstanceSegmenter", "MaskRCNNSegmenter", "build_mask_rcnn", "coco_mask_rcnn"]

_RESNET_CHANNELS = {"resnet18": [64, 128, 256, 512], "resnet34": [64, 128, 256, 512],
                    "resnet50": [256, 512, 1024, 2048], "resnet101": [256, 512, 1024, 2048]}
_ASPECT_RATIOS = (0.5, 1.0, 2.0)


class InstanceSegmenter(Protocol):
    """Mask candidates of single images.

    ``images``: list of float ``[3, H, W]`` RGB tensors in 0..1 (sizes may differ). Returns one dict
    per image: ``"masks"`` bool ``[N, H, W]`` at the image's size and ``"scores"`` float ``[N]`` in
    [0, 1], by decreasing score."""

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]: ...


class _EfficientNetFPN(nn.Module):
    """EfficientNet-Lite0 (strides 4 .. 32) under a feature pyramid with an extra max-pooled level;
    ``out_channels`` as torchvision's ``BackboneWithFPN``. Takes ImageNet-normalised images."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        from referformer.models.backbones.efficientnet import EfficientNetBackbone

        self.body = EfficientNetBackbone("efficientnet_lite0", train_backbone=True)
        self.fpn = FeaturePyramidNetwork(self.body.num_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))
        return self.fpn(features)


def _backbone(config: SegmenterConfig) -> nn.Module:
    if config.backbone == "efficientnet_lite0":
        return _EfficientNetFPN(config.fpn_channels)
    trunk = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=FrozenBatchNorm2d)
    for name, p in trunk.named_parameters():  # the stem and layer1 frozen, as torchvision's default
        p.requires_grad_(name.startswith(("layer2", "layer3", "layer4")))
    return BackboneWithFPN(trunk, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
                           _RESNET_CHANNELS[config.backbone], config.fpn_channels, extra_blocks=LastLevelMaxPool())


def build_mask_rcnn(config: SegmenterConfig) -> MaskRCNN:
    """A random, class-agnostic torchvision ``MaskRCNN`` of ``config``: its heads are torchvision's
    (two-layer box head, four-conv mask head) at ``representation_size`` / ``fpn_channels``; with 256
    and 1024 they are exactly ``maskrcnn_resnet50_fpn``'s. Inputs are images in 0..1, normalised inside
    with ImageNet's mean and std."""
    backbone = _backbone(config)
    channels = config.fpn_channels
    anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes), (_ASPECT_RATIOS,) * len(config.anchor_sizes))
    return MaskRCNN(
        backbone, num_classes=None, min_size=config.min_size, max_size=config.max_size,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(channels * 7 * 7, config.representation_size),
        box_predictor=FastRCNNPredictor(config.representation_size, config.num_classes),
        mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, config.num_classes),
        box_score_thresh=config.score_threshold, box_detections_per_img=config.max_detections,
    )


def coco_mask_rcnn(score_threshold: float = 0.3, max_detections: int = 20) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn`` with its COCO weights (``weights="DEFAULT"``: torchvision
    downloads them on first use; needs a network). For users who want F_Seg without training one."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(weights="DEFAULT", box_score_thresh=score_threshold,
                                 box_detections_per_img=max_detections)


class MaskRCNNSegmenter:
    """A torchvision ``MaskRCNN`` as an :class:`InstanceSegmenter`.

    Args:
        model: the Mask R-CNN (put in eval mode; its own ``box_score_thresh`` applies first).
        score_threshold: candidates scoring below it are dropped.
        mask_threshold: a candidate's mask is its pasted mask probability above this.
        max_candidates: at most this many candidates per image (``None``: all).
    """

    def __init__(self, model: nn.Module, score_threshold: float = 0.3, mask_threshold: float = 0.5,
                 max_candidates: int | None = None) -> None:
        self.model = model.eval()
        self.score_threshold, self.mask_threshold, self.max_candidates = score_threshold, mask_threshold, max_candidates

    @classmethod
    def from_config(cls, model: nn.Module, config: SegmenterConfig) -> MaskRCNNSegmenter:
        """The wrapper with ``config``'s thresholds and candidate bound."""
        return cls(model, config.score_threshold, config.mask_threshold, config.max_detections)

    @torch.inference_mode()
    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        device = next(self.model.parameters()).device
        outputs = self.model([image.to(device, torch.float32) for image in images])
        results = []
        for out in outputs:
            order = torch.argsort(out["scores"], descending=True, stable=True)
            order = order[out["scores"][order] >= self.score_threshold][:self.max_candidates]
            masks = out["masks"][order, 0] > self.mask_threshold  # [N, H, W]
            results.append({"masks": masks.cpu(), "scores": out["scores"][order].float().cpu()})
        return results
