"""The tracklet-grounding model: F_Seg, the visual and text encoders and F_Gnd in one module.

:class:`TrackletGrounder` holds what has weights of its own: the instance segmenter (a torchvision
``MaskRCNN``, ``segmenter.*``), the visual encoder (a ``build_backbone`` trunk, ``visual.*``), the text
encoder (a ``transformers`` BERT or RoBERTa, ``text_encoder.*``) and the grounding transformer
(``grounding.*``). F_Prop, the mask propagator, is **not** a submodule: it is a model of its own
(``model_type`` ``propagator``) loaded by name at inference (``config.propagator``), so one trained
propagator serves ReferFormer's post-process, ``referformer propagate`` and this system alike, and
another (SAM 2) can replace it without touching these weights.

The pipeline over a video (key frames, propagation, tracklet-NMS, grounding, results) is
:mod:`referformer.inference.tracklets`; this module only has the per-tensor steps.
"""

from __future__ import annotations

from torch import Tensor, nn

from referformer.models.backbones import build_backbone
from referformer.models.text_encoder import build_text_encoder, padding_mask
from referformer.models.tracklets.config import TrackletsConfig
from referformer.models.tracklets.grounding import GroundingOutput, GroundingTransformer
from referformer.models.tracklets.segmenter import MaskRCNNSegmenter, build_mask_rcnn

__all__ = ["TrackletGrounder", "build_tracklet_grounder"]


class TrackletGrounder(nn.Module):
    """The system's learned parts (see the module docstring); ``config`` is its :class:`TrackletsConfig`."""

    def __init__(self, config: TrackletsConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.segmenter = build_mask_rcnn(config.segmenter)
        self.visual = _visual_encoder(config)
        self.visual_channels = int(self.visual.num_channels[-1])
        self.text_encoder = build_text_encoder(config.text_encoder, with_pooler=False)
        self.grounding = GroundingTransformer(
            self.visual_channels, config.text_encoder.hidden_size, config.d_model, config.num_layers, config.num_heads,
            config.ffn_dim, config.mlp_dim, config.dropout, config.motion, config.motion_samples)

    def instance_segmenter(self) -> MaskRCNNSegmenter:
        """F_Seg behind the :class:`~.segmenter.InstanceSegmenter` protocol, with the config's thresholds."""
        return MaskRCNNSegmenter.from_config(self.segmenter, self.config.segmenter)

    def encode_frames(self, frames: Tensor) -> Tensor:
        """``frames``: ImageNet-normalised ``[T, 3, H, W]`` (``H``, ``W`` multiples of the stride) ->
        the visual feature ``I_t`` ``[T, C, H / s, W / s]`` at ``s = config.visual_stride``."""
        return self.visual(frames)[-1]

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``input_ids`` / ``attention_mask`` int64 ``[B, L]`` -> (word features ``[B, L, Dt]``, the last
        hidden state; padding bool ``[B, L]``, True where ``attention_mask == 0``)."""
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, padding_mask(input_ids, attention_mask, self.config.text_encoder.pad_token_id)

    def forward(self, tokens: Tensor, words: Tensor, word_padding: Tensor | None = None,
                tracklet_padding: Tensor | None = None, present: Tensor | None = None,
                boxes: Tensor | None = None) -> GroundingOutput:
        """F_Gnd on pooled tracklet tokens ``[B, P, T, C]`` and word features ``[B, L, Dt]``; see
        :meth:`~.grounding.GroundingTransformer.forward` for every argument."""
        return self.grounding(tokens, words, word_padding, tracklet_padding, present, boxes)


def _visual_encoder(config: TrackletsConfig) -> nn.Module:
    """The trunk up to ``config.visual_stride`` (its last output is that stride's feature)."""
    if config.visual_backbone.startswith("efficientnet"):
        return build_backbone(config.visual_backbone, strides=(config.visual_stride,))
    return _ResNetUpTo(build_backbone(config.visual_backbone), config.visual_stride)


class _ResNetUpTo(nn.Module):
    """A ``ResNetBackbone`` whose outputs stop at ``stride`` (``num_channels`` accordingly); keys ``trunk.*``."""

    def __init__(self, trunk: nn.Module, stride: int) -> None:
        super().__init__()
        self.trunk, self.count = trunk, list(trunk.strides).index(stride) + 1
        self.num_channels = list(trunk.num_channels[:self.count])

    def forward(self, frames: Tensor) -> list[Tensor]:
        return self.trunk(frames)[:self.count]


def build_tracklet_grounder(config: TrackletsConfig, init_weights: bool = True) -> TrackletGrounder:
    """A randomly initialised :class:`TrackletGrounder` (``init_weights`` is accepted for
    :data:`referformer.checkpoint.MODEL_TYPES`: torchvision / transformers initialise, nothing to skip)."""
    del init_weights
    return TrackletGrounder(config)

