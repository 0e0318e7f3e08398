"""RefVOS (Bellver et al., "RefVOS: A Closer Look at Referring Expressions for Video Object Segmentation").

A frame-by-frame referring segmenter: DeepLabv3 (ResNet-101, output stride 8, ASPP rates 12/24/36)
whose 256-channel ASPP output is multiplied element-wise with a 256-d projection of a BERT sentence
embedding, followed by DeepLabv3's classifier convolutions predicting background / foreground
(2 classes). The logits are upsampled bilinearly (``align_corners=False``) to the input size, as
torchvision's ``DeepLabV3.forward`` does. Every frame is processed independently.

It takes the same batch as :class:`~referformer.models.ReferFormer` (frames ``[B, T, 3, H, W]``
normalised and padded, padding mask, tokenised text) and splits its forward pass the same way:

* ``encode_video(frames, padding_mask)`` -> :class:`RefVOSVisualFeatures` (backbone + ASPP; no text);
* ``encode_text(input_ids, attention_mask)`` -> sentence embedding ``[B, C]`` (BERT + projection);
* ``decode(visual, sentence)`` -> ``{"seg_logits": [B, T, 2, H, W]}`` (fusion + classifier + upsampling).

Module names equal torchvision's ``deeplabv3_resnet101`` (``backbone.*``, ``classifier.*``), so its
state dicts load into ``backbone``/``classifier`` as they are. The configuration is
:class:`referformer.config.RefVOSConfig`, the DeepLabv3 parts are in :mod:`referformer.models.deeplab`,
the BERT and its weight files in :mod:`referformer.models.bert`. See ``docs/refvos.md`` for what is
known and what is uncertain about the original code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from referformer.config import RefVOSConfig
from referformer.errors import UserError
from referformer.models.bert import build_bert, load_encoder_weights
from referformer.models.deeplab import FOREGROUND, build_deeplab_backbone, build_deeplab_head
from referformer.models.prediction import ClipPrediction

__all__ = [
    "RefVOS",
    "RefVOSVisualFeatures",
    "build_refvos",
    "postprocess_refvos_clip",
    "refvos_frame_scores",
    "refvos_query_outputs",
]


# ---- the model ------------------------------------------------------------------------------------
@dataclass
class RefVOSVisualFeatures:
    """Sentence-independent part of the forward pass.

    aspp: ``[b * t, C, h, w]`` ASPP output (C = ``aspp_channels``, h, w = H/os, W/os), frames of a clip
    contiguous; input_size: padded input (H, W) in pixels (the logits are upsampled to it);
    num_frames: t.
    """

    aspp: Tensor
    input_size: tuple[int, int]
    num_frames: int

    @property
    def batch_size(self) -> int:
        return self.aspp.shape[0] // self.num_frames

    def expand(self, batch_size: int) -> RefVOSVisualFeatures:
        """The same clip repeated for ``batch_size`` sentences (no-op when already that size)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot share {self.batch_size} clips between {batch_size} sentences; "
                             "give one clip or one clip per sentence")
        aspp = self.aspp[None].expand(batch_size, *self.aspp.shape).flatten(0, 1)
        return RefVOSVisualFeatures(aspp, self.input_size, self.num_frames)

    def select_clips(self, clip_index: Tensor) -> RefVOSVisualFeatures:
        """One clip per sentence: clip_index int64 ``[S]`` (clip of each sentence) -> features of S clips."""
        aspp = self.aspp.unflatten(0, (self.batch_size, self.num_frames))[clip_index.to(self.aspp.device)]
        return RefVOSVisualFeatures(aspp.flatten(0, 1), self.input_size, self.num_frames)

    def select_frames(self, frame_indices: Tensor) -> RefVOSVisualFeatures:
        """Keep some frames of every clip: frame_indices int64 ``[b, k]`` -> features of k frames per clip
        (the A2D / JHMDB evaluation decodes only the annotated frame, as with ReferFormer)."""
        b = self.batch_size
        aspp = self.aspp.unflatten(0, (b, self.num_frames))
        index = frame_indices.to(aspp.device).long()
        aspp = aspp[torch.arange(b, device=aspp.device)[:, None], index]
        return RefVOSVisualFeatures(aspp.flatten(0, 1), self.input_size, int(index.shape[1]))


class RefVOS(nn.Module):
    """DeepLabv3 + BERT, multiplied after the ASPP. Output of ``decode``/``forward``:
    ``{"seg_logits": [B, T, 2, H, W]}``, background/foreground logits at the (padded) input size;
    ``decode`` also returns the one-query view of :func:`refvos_query_outputs` that the inference
    code (``segment``, ``evaluate``, the Predictor, synthetic scoring) reads from every model."""

    model_type: ClassVar[str] = "refvos"
    mask_stride: ClassVar[int] = 1  # pred_masks of the one-query view are at the input size
    # what ``compile_model`` wraps: the DeepLab backbone (the head is indexed, see decode, and small)
    compile_parts: ClassVar[tuple[str, ...]] = ("backbone",)

    def __init__(self, config: RefVOSConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.backbone, backbone_channels = build_deeplab_backbone(config.backbone, config.output_stride)
        self.classifier = build_deeplab_head(backbone_channels, config.atrous_rates, config.aspp_channels)
        self.text_encoder = build_bert(config)
        self.text_proj = nn.Linear(config.text_encoder.hidden_size, config.aspp_channels)
        if not config.train_backbone:
            self.backbone.requires_grad_(False)
        if config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)

    def encode_video(self, frames: Tensor, padding_mask: Tensor | None = None,
                     image_sizes: Tensor | None = None) -> RefVOSVisualFeatures:
        """frames: normalised ``[b, t, 3, H, W]`` (or ``[t, 3, H, W]``); padding_mask: bool ``[b, t, H, W]``.

        The padding mask and ``image_sizes`` are accepted for interface parity with ReferFormer and
        not used: padded pixels are zeros (the mean colour) and every frame is convolved whole, as
        in DeepLabv3.
        """
        del padding_mask, image_sizes
        if frames.dim() == 4:
            frames = frames[None]
        _, t, _, h, w = frames.shape
        x = frames.flatten(0, 1)
        if self.training and x.shape[0] < 2:
            raise UserError("RefVOS training needs at least 2 frames per batch (the BatchNorm of the "
                            "ASPP image-pooling branch sees a single value otherwise); raise the batch "
                            "size or the number of frames")
        features = self.backbone(x)["out"]
        return RefVOSVisualFeatures(self.classifier[0](features), (h, w), t)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids, attention_mask: int64 ``[B, L]`` BERT ids -> sentence embedding ``[B, C]``."""
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.config.sentence_embedding == "pooler":
            sentence = out.pooler_output
        else:
            sentence = out.last_hidden_state[:, 0]
        return self.text_proj(sentence)

    def decode(self, visual: RefVOSVisualFeatures, sentence: Tensor, with_queries: bool = True) -> dict[str, Tensor]:
        """Fuse and classify. ``visual`` holds one clip per sentence or one clip shared by all;
        sentence: ``[B, C]``. Returns ``{"seg_logits": [B, T, 2, H, W]}`` and, with ``with_queries``,
        the one-query view ``pred_logits`` / ``pred_boxes`` / ``pred_masks`` (:func:`refvos_query_outputs`)."""
        b = sentence.shape[0]
        visual = visual.expand(b)
        t = visual.num_frames
        aspp = visual.aspp.unflatten(0, (b, t))
        fused = (aspp * sentence[:, None, :, None, None].to(aspp.dtype)).flatten(0, 1)
        logits = self.classifier[1:](fused)
        logits = F.interpolate(logits, size=visual.input_size, mode="bilinear", align_corners=False)
        out = {"seg_logits": logits.unflatten(0, (b, t))}
        if with_queries:
            out.update(refvos_query_outputs(out["seg_logits"]))
        return out

    def forward(self, frames: Tensor, input_ids: Tensor, attention_mask: Tensor,
                padding_mask: Tensor | None = None, image_sizes: Tensor | None = None,
                token_type_ids: Tensor | None = None, frame_indices: Tensor | None = None,
                clip_index: Tensor | None = None) -> dict[str, Tensor]:
        """The training forward pass: ``{"seg_logits": [S, T, 2, H, W]}`` (no query view).

        frames: ``[b, t, 3, H, W]`` normalised; input_ids / attention_mask: ``[S, L]``, one sentence
        per clip (S = b) or, with ``clip_index`` int64 ``[S]``, the clip of each sentence (the
        shared-clip collate). ``image_sizes`` is accepted (the ReferFormer collate passes it) and
        unused; ``frame_indices`` (A2D / JHMDB) too: every frame is predicted and the loss reads
        the annotated ones from the targets' ``valid_indices``.
        """
        del image_sizes, frame_indices
        visual = self.encode_video(frames, padding_mask)
        if clip_index is not None:
            visual = visual.select_clips(clip_index)
        return self.decode(visual, self.encode_text(input_ids, attention_mask, token_type_ids), with_queries=False)

    def load_text_encoder(self, path: str | Path) -> None:
        """Load BERT encoder weights saved by :func:`referformer.models.bert.save_encoder_weights`."""
        load_encoder_weights(self.text_encoder, path)


def build_refvos(config: RefVOSConfig) -> RefVOS:
    """A RefVOS of ``config`` with random weights (nothing is downloaded)."""
    return RefVOS(config)


# ---- post-processing --------------------------------------------------------------------------------
def refvos_frame_scores(fg_prob: Tensor, threshold: float = 0.5) -> Tensor:
    """fg_prob ``[..., H, W]`` foreground probabilities -> per-frame score ``[...]``: the mean
    probability inside the mask ``fg_prob > threshold``, or the frame's highest probability when the
    mask is empty (then <= threshold). RefVOS has no score of its own: this one is ours."""
    masks = fg_prob > threshold
    area = masks.flatten(-2).sum(-1)
    inside_mean = (fg_prob * masks).flatten(-2).sum(-1) / area.clamp(min=1)
    return torch.where(area > 0, inside_mean, fg_prob.flatten(-2).max(-1).values)


def _mask_boxes(masks: Tensor) -> tuple[Tensor, Tensor]:
    """masks bool ``[N, H, W]`` -> (``[N, 4]`` xyxy pixels, inclusive extents; ``[N, 4]`` cxcywh
    normalised by (W, H)); zeros for an empty mask."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    nonempty = masks.flatten(1).any(-1)
    if bool(nonempty.any()):
        boxes[nonempty] = torchvision.ops.masks_to_boxes(masks[nonempty]).float()
    height, width = (float(s) for s in masks.shape[-2:])
    x0, y0, x1, y1 = boxes.unbind(-1)
    cxcywh = torch.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], -1)
    return boxes, cxcywh


def refvos_query_outputs(seg_logits: Tensor, threshold: float = 0.5) -> dict[str, Tensor]:
    """RefVOS logits as ReferFormer's output with one query and one class, what inference reads.

    seg_logits ``[B, T, 2, H, W]`` -> ``pred_masks`` ``[B, T, 1, H, W]`` = ``fg - bg`` logits at the
    (padded) input size (sigmoid = the softmax foreground probability, so ``> 0`` = the argmax);
    ``pred_logits`` ``[B, T, 1, 1]`` = logit of :func:`refvos_frame_scores` (computed at the input
    size, padding included); ``pred_boxes`` ``[B, T, 1, 4]`` = normalised cxcywh box of the mask at
    the input size (inclusive pixel extents, zeros when empty). ReferFormer's ``pred_masks`` are at
    stride 4: consumers read the model's ``mask_stride`` (1 here) or resize to a target size.
    """
    mask_logits = (seg_logits[:, :, FOREGROUND] - seg_logits[:, :, 1 - FOREGROUND]).float()
    fg_prob = mask_logits.sigmoid()
    scores = refvos_frame_scores(fg_prob, threshold)
    _, cxcywh = _mask_boxes((fg_prob > threshold).flatten(0, 1))
    b, t = seg_logits.shape[:2]
    return {"pred_masks": mask_logits[:, :, None], "pred_logits": torch.logit(scores, eps=1e-6)[..., None, None],
            "pred_boxes": cxcywh.reshape(b, t, 1, 4)}


def postprocess_refvos_clip(seg_logits: Tensor, image_size: tuple[int, int], orig_size: tuple[int, int],
                            threshold: float = 0.5) -> ClipPrediction:
    """One clip, one sentence -> the same :class:`ClipPrediction` as ReferFormer's inference.

    seg_logits: ``[T, 2, H_pad, W_pad]`` (one clip of ``decode``); image_size: unpadded input (h, w)
    pixels (the padding is cropped off); orig_size: (H, W) pixels of the original frames. The
    logits are resized bilinearly (``align_corners=False``) to ``orig_size``; the mask is
    ``P(foreground) > threshold`` (0.5 = the argmax over the 2 classes). ``mask_logits`` holds
    ``fg - bg`` logits (sigmoid of it = the softmax foreground probability).

    Scores (our choice; the original has no score): per frame, the mean foreground probability
    inside the predicted mask, or the highest foreground probability of the frame when the mask is
    empty (then < threshold). ``query_scores`` = ``[mean over frames]``, ``query`` = 0, ``logits``
    ``[T, 1]`` = logit of the frame scores, boxes from the masks (inclusive extents, zeros if empty).
    """
    h, w = (int(s) for s in image_size)
    logits = seg_logits[:, :, :h, :w].float()
    logits = F.interpolate(logits, size=tuple(int(s) for s in orig_size), mode="bilinear", align_corners=False)
    mask_logits = logits[:, FOREGROUND] - logits[:, 1 - FOREGROUND]
    fg_prob = mask_logits.sigmoid()
    masks = fg_prob > threshold
    scores = refvos_frame_scores(fg_prob, threshold)
    boxes, boxes_cxcywh = _mask_boxes(masks)
    return ClipPrediction(
        masks=masks, mask_logits=mask_logits, boxes=boxes, scores=scores, query_scores=scores.mean()[None],
        query=0, logits=torch.logit(scores, eps=1e-6)[:, None], boxes_cxcywh=boxes_cxcywh, reference_points=None)
