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
state dicts load into ``backbone``/``classifier`` as they are. See ``docs/refvos.md`` for what is
known and what is uncertain about the original code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from referformer.errors import UserError
from referformer.inference.postprocess import ClipPrediction

__all__ = [
    "FOREGROUND",
    "NUM_CLASSES",
    "BertTextConfig",
    "RefVOS",
    "RefVOSConfig",
    "RefVOSVisualFeatures",
    "build_bert",
    "build_deeplab_backbone",
    "build_refvos",
    "postprocess_refvos_clip",
    "refvos_frame_scores",
    "refvos_query_outputs",
    "torchvision_deeplab_converter",
]

NUM_CLASSES = 2  # channel 0 = background, channel 1 = foreground (the referred object)
FOREGROUND = 1

REFVOS_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
SENTENCE_EMBEDDINGS = ("cls", "pooler")
# torchvision's replace_stride_with_dilation for layer2, layer3, layer4
_DILATION_FLAGS = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


@dataclass
class BertTextConfig:
    """Fields of a ``transformers.BertConfig``; defaults are exactly ``bert-base-uncased``."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    attn_implementation: str = "sdpa"
    # Hugging Face name (looked up offline in the local cache) or a local directory.
    tokenizer: str = "bert-base-uncased"

    @property
    def max_tokens(self) -> int:
        """Longest tokenised sentence (special tokens included): BERT counts positions from 0."""
        return self.max_position_embeddings

    def bert_config(self) -> Any:
        """The ``transformers.BertConfig`` of these fields."""
        from transformers import BertConfig

        kwargs = dataclasses.asdict(self)
        kwargs.pop("tokenizer")
        attn = kwargs.pop("attn_implementation")
        config = BertConfig(**kwargs)
        config._attn_implementation = attn
        return config


@dataclass
class RefVOSConfig:
    """Architecture of a RefVOS model. Defaults = the paper's model (DeepLabv3-ResNet101 OS 8 + BERT-base).

    ``sentence_embedding``: ``"cls"`` = BERT's last hidden state at the [CLS] token (what the
    original code is believed to use, see docs/refvos.md), ``"pooler"`` = BERT's pooler output
    (tanh(dense([CLS]))). ``aspp_channels`` is 256 in DeepLabv3; smaller only for tiny test models.
    ``output_stride`` 8 / 16 / 32 (ResNet-18/34 get their dilation by hand, torchvision refuses it).
    """

    model_type: ClassVar[str] = "refvos"

    backbone: str = "resnet101"
    output_stride: int = 8
    atrous_rates: tuple[int, ...] = (12, 24, 36)
    aspp_channels: int = 256
    sentence_embedding: str = "cls"
    text_encoder: BertTextConfig = field(default_factory=BertTextConfig)
    freeze_text_encoder: bool = False
    train_backbone: bool = True

    def validate(self) -> RefVOSConfig:
        """Raise ``UserError`` for a combination that cannot be built; return ``self``."""

        def fail(msg: str) -> None:
            raise UserError(f"invalid RefVOSConfig: {msg}")

        if self.backbone not in REFVOS_BACKBONES:
            fail(f"unknown backbone {self.backbone!r}; choose one of {', '.join(REFVOS_BACKBONES)}")
        if self.output_stride not in _DILATION_FLAGS:
            fail(f"output_stride must be 8, 16 or 32 (got {self.output_stride})")
        if len(self.atrous_rates) < 1 or any(int(r) < 1 for r in self.atrous_rates):
            fail(f"atrous_rates must be positive integers (got {list(self.atrous_rates)})")
        if self.aspp_channels < 1:
            fail(f"aspp_channels must be >= 1 (got {self.aspp_channels})")
        if self.sentence_embedding not in SENTENCE_EMBEDDINGS:
            fail(f"sentence_embedding must be one of {SENTENCE_EMBEDDINGS} (got {self.sentence_embedding!r})")
        t = self.text_encoder
        if t.hidden_size % t.num_attention_heads:
            fail(f"text_encoder.hidden_size ({t.hidden_size}) must be divisible by "
                 f"text_encoder.num_attention_heads ({t.num_attention_heads})")
        if t.attn_implementation not in ("eager", "sdpa"):
            fail(f"text_encoder.attn_implementation must be 'eager' or 'sdpa' (got {t.attn_implementation!r})")
        return self

    # ---- JSON round trip ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict with ``"model_type": "refvos"`` (nested text encoder config included)."""
        d = dataclasses.asdict(self)
        d["atrous_rates"] = list(self.atrous_rates)
        return {"model_type": self.model_type, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefVOSConfig:
        """Inverse of ``to_dict``; ``model_type`` may be absent; unknown keys are an error naming them."""
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise UserError(f"RefVOSConfig.from_dict got model_type {model_type!r}; expected {cls.model_type!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown RefVOSConfig field(s) {unknown}; known fields: {sorted(known)}")
        text = data.pop("text_encoder", None)
        if isinstance(text, dict):
            tknown = {f.name for f in dataclasses.fields(BertTextConfig)}
            tunknown = sorted(set(text) - tknown)
            if tunknown:
                raise UserError(f"unknown text_encoder field(s) {tunknown}; known: {sorted(tknown)}")
            text = BertTextConfig(**text)
        if "atrous_rates" in data:
            data["atrous_rates"] = tuple(int(r) for r in data["atrous_rates"])
        return cls(**data) if text is None else cls(text_encoder=text, **data)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the config; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> RefVOSConfig:
        """Read a config from a JSON file path or a JSON string."""
        p = Path(path_or_text) if not str(path_or_text).lstrip().startswith("{") else None
        text = p.read_text(encoding="utf-8") if p is not None else str(path_or_text)
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> RefVOSConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


# ---- DeepLabv3 parts ----------------------------------------------------------------------------
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


def build_bert(config: RefVOSConfig) -> nn.Module:
    """RefVOS's text encoder: a random ``transformers.BertModel`` of ``config.text_encoder``, without the
    pooler when ``sentence_embedding`` does not use it (so that no parameter is left without a gradient
    under DDP)."""
    from transformers import BertModel

    return BertModel(config.text_encoder.bert_config(), add_pooling_layer=config.sentence_embedding == "pooler")


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
        """Load BERT encoder weights saved by :func:`referformer.text_mlm.save_encoder_weights`."""
        from referformer.text_mlm import load_encoder_weights

        load_encoder_weights(self.text_encoder, path)


def build_refvos(config: RefVOSConfig) -> RefVOS:
    """A RefVOS of ``config`` with random weights (nothing is downloaded)."""
    return RefVOS(config)


def torchvision_deeplab_converter(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision ``deeplabv3_resnet*`` state dict -> RefVOS initial weights (``--init``): drops the
    auxiliary FCN head (``aux_classifier.*``) and a final classifier conv whose class count is not 2
    (COCO/VOC weights have 21); every other key is already RefVOS's. Our own checkpoints pass unchanged."""
    final = "classifier.4."
    drop_final = any(k.startswith(final) and v.shape[0] != NUM_CLASSES for k, v in state.items())
    return {k: v for k, v in state.items()
            if not k.startswith("aux_classifier.") and not (drop_final and k.startswith(final))}


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
