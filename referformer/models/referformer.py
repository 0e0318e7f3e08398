"""ReferFormer: language as queries for referring video object segmentation.

The forward pass is split in three parts so that a video can be encoded once and decoded for
many sentences:

* ``encode_video(frames, padding_mask)`` -> ``VisualFeatures``: backbone, input projections and
  2-D positions; nothing here depends on the text;
* ``encode_text(input_ids, attention_mask)`` -> ``TextFeatures``: text encoder (RoBERTa) + resizer;
* ``decode(visual, text)`` -> outputs: early fusion, deformable transformer, class/box heads,
  cross-modal FPN and dynamic mask head. ``visual`` may hold one clip for B sentences.

``forward`` = all three, with the original's output dict.

Module names equal the original's, so official state-dict keys map one-to-one
(only ``backbone.0.body.`` <-> ``backbone.body.``; see ``referformer.checkpoint``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.config import ModelConfig
from referformer.models.backbones import build_backbone
from referformer.models.fastpath import reference_mode, reference_mode_enabled
from referformer.models.fpn import CrossModalFPNDecoder
from referformer.models.fusion import VisionLanguageFusionModule, frames_to_sequence, sequence_to_frames
from referformer.models.heads import MLP, inverse_sigmoid
from referformer.models.mask_head import dynamic_mask_logits
from referformer.models.position import PositionEmbeddingSine1D, PositionEmbeddingSine2D
from referformer.models.motion import MotionQueryEncoder
from referformer.models.text_encoder import FeatureResizer, build_text_encoder, padding_mask, sentence_embedding
from referformer.models.transformer import DeformableTransformer


@dataclass
class VisualFeatures:
    """Sentence-independent encoding of ``b`` clips of ``num_frames`` frames (N = b * num_frames, frames of a clip contiguous).

    srcs: 4 levels [N, C, h_l, w_l] after ``input_proj`` (strides 8, 16, 32, 64), before the text fusion;
    masks: 4 levels bool [N, h_l, w_l] (True = padding); pos: 4 levels [N, C, h_l, w_l] 2-D sine positions;
    fine_features: backbone stage 1 [N, C_1, H/4, W/4] with fine_mask / fine_pos;
    image_sizes: int64 [b, 2] unpadded input (H, W) in pixels, for the relative coordinates.
    """

    srcs: list[Tensor]
    masks: list[Tensor]
    pos: list[Tensor]
    fine_features: Tensor
    fine_mask: Tensor
    fine_pos: Tensor
    image_sizes: Tensor
    num_frames: int

    @property
    def batch_size(self) -> int:
        return self.srcs[0].shape[0] // self.num_frames

    def expand(self, batch_size: int) -> "VisualFeatures":
        """Repeat a single clip ``batch_size`` times (to decode that many sentences at once)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot expand visual features of {self.batch_size} clips to {batch_size}")

        return self._map(lambda x: _repeat_clip(x, batch_size), image_sizes=self.image_sizes.expand(batch_size, 2))

    def select_clips(self, clip_index: Tensor) -> "VisualFeatures":
        """Clips ``clip_index`` ([b'] int positions in ``0..batch_size-1``, repeats allowed): the
        encoding of ``b'`` clips, e.g. one per sentence when several sentences share a clip in training."""
        clip_index = torch.as_tensor(clip_index, device=self.srcs[0].device).long().reshape(-1)
        t = self.num_frames
        rows = (clip_index[:, None] * t + torch.arange(t, device=clip_index.device)).reshape(-1)
        return self._map(lambda x: x.index_select(0, rows), image_sizes=self.image_sizes.index_select(0, clip_index))

    def select_frames(self, frame_indices: Tensor) -> "VisualFeatures":
        """Keep frames ``frame_indices`` ([b, k] positions within each clip; ``num_frames`` becomes k).

        A2D-Sentences / JHMDB-Sentences: the original runs the backbone on the whole clip, then keeps
        only the annotated frame's features (``valid_indices``) and decodes with ``t = k``.
        """
        frame_indices = torch.as_tensor(frame_indices, device=self.srcs[0].device).long().reshape(self.batch_size, -1)
        offsets = torch.arange(self.batch_size, device=frame_indices.device)[:, None] * self.num_frames
        rows = (frame_indices + offsets).reshape(-1)
        return self._map(lambda x: x.index_select(0, rows), num_frames=int(frame_indices.shape[1]))

    def _map(self, fn: Any, **changes: Any) -> "VisualFeatures":
        """``fn`` applied to every per-frame tensor ([N, ...] -> [N', ...]), other fields from ``changes``."""
        return replace(self, srcs=[fn(x) for x in self.srcs], masks=[fn(x) for x in self.masks],
                       pos=[fn(x) for x in self.pos], fine_features=fn(self.fine_features),
                       fine_mask=fn(self.fine_mask), fine_pos=fn(self.fine_pos), **changes)


def _repeat_clip(x: Tensor, batch_size: int) -> Tensor:
    """[t, ...] -> [(batch_size t), ...] (copies)."""
    return x.unsqueeze(0).expand(batch_size, *x.shape).reshape(batch_size * x.shape[0], *x.shape[1:])


@dataclass
class TextFeatures:
    """word_features: [B, L, C]; padding_mask: bool [B, L] (True = padding); sentence_feature: [B, C]
    (resized RoBERTa pooler output)."""

    word_features: Tensor
    padding_mask: Tensor
    sentence_feature: Tensor

    def select(self, index: Tensor | list[int] | slice) -> "TextFeatures":
        """Subset of the sentences (batch dimension)."""
        return TextFeatures(self.word_features[index], self.padding_mask[index], self.sentence_feature[index])


class ReferFormer(nn.Module):
    """The full model. Outputs (``decode``/``forward``) are a dict:

    ``pred_logits`` [b, t, q, num_classes], ``pred_boxes`` [b, t, q, 4] (cx, cy, w, h normalised to [0, 1]),
    ``pred_masks`` [b, t, q, H/4, W/4] mask logits, ``aux_outputs`` (one dict with these three keys per
    decoder layer but the last, when ``aux_loss``), ``reference_points`` [b, t, q, 2] (the points fed to
    the last decoder layer, normalised x, y).
    """

    mask_stride: ClassVar[int] = 4  # pred_masks are at 1/4 of the (padded) input size
    # the sentence-dependent bulk of ``decode`` (encoder + decoder, CM-FPN): what ``compile_model`` wraps
    compile_parts: ClassVar[tuple[str, ...]] = ("transformer", "pixel_decoder")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden_dim
        self.num_queries = config.num_queries
        self.num_feature_levels = config.num_feature_levels

        self.backbone = build_backbone(config.backbone, train_backbone=config.train_backbone)
        self.position_embedding = PositionEmbeddingSine2D(d // 2, normalize=True)
        self.transformer = DeformableTransformer(
            d_model=d, nhead=config.nheads, num_encoder_layers=config.enc_layers,
            num_decoder_layers=config.dec_layers, dim_feedforward=config.dim_feedforward, dropout=config.dropout,
            num_feature_levels=config.num_feature_levels, dec_n_points=config.dec_n_points,
            enc_n_points=config.enc_n_points)

        class_embed = nn.Linear(d, config.num_classes)
        bbox_embed = MLP(d, d, 4, 3)
        prior_prob = 0.01
        nn.init.constant_(class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0)
        num_pred = config.dec_layers
        if config.with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_pred))
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            # iterative box refinement: the decoder uses (and the state dict ties) the same heads
            self.transformer.decoder.bbox_embed = self.bbox_embed
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * num_pred)  # tied, as in the original
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_pred)
            self.transformer.decoder.bbox_embed = None
        self.query_embed = nn.Embedding(config.num_queries, d)

        in_channels = self.backbone.num_channels[-3:]
        projs = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in in_channels]
        extra_in = in_channels[-1]
        for _ in range(config.num_feature_levels - len(in_channels)):
            projs.append(nn.Sequential(nn.Conv2d(extra_in, d, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, d)))
            extra_in = d
        self.input_proj = nn.ModuleList(projs)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.text_encoder = build_text_encoder(config.text_encoder, with_pooler=config.sentence_embedding == "pooler")
        if config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        self.resizer = FeatureResizer(config.text_encoder.hidden_size, d, dropout=0.1)
        self.fusion_module = VisionLanguageFusionModule(d_model=d, nhead=config.nheads)
        self.text_pos = PositionEmbeddingSine1D(d, normalize=True)

        self.pixel_decoder = CrossModalFPNDecoder(
            [self.backbone.num_channels[0]] + 3 * [d], conv_dim=d, mask_dim=config.mask_dim, nhead=config.nheads,
            dim_feedforward=config.dim_feedforward, dropout=config.dropout)
        self.controller = MLP(d, d, config.num_dynamic_params, 3)
        for layer in self.controller.layers:
            nn.init.zeros_(layer.bias)
            nn.init.xavier_uniform_(layer.weight)
        # our option, built last so that every other weight is drawn as without it
        self.motion_encoder = (MotionQueryEncoder(d, config.nheads, config.dim_feedforward, config.dropout)
                               if config.motion_queries else None)

    # ------------------------------------------------------------------------------------------
    def encode_video(self, frames: Tensor, padding_mask: Tensor | None = None,
                     image_sizes: Tensor | None = None) -> VisualFeatures:
        """frames: normalised [b, t, 3, H, W] (or [t, 3, H, W] for one clip); padding_mask: bool
        [b, t, H, W] (True = padding, default none); image_sizes: int64 [b, 2] unpadded (H, W) in pixels
        (default: the full H, W)."""
        if frames.dim() == 4:
            frames = frames[None]
            padding_mask = None if padding_mask is None else padding_mask.reshape(1, *padding_mask.shape[-3:])
        b, t, _, h, w = frames.shape
        x = frames.flatten(0, 1)
        if padding_mask is None:
            mask = torch.zeros((b * t, h, w), dtype=torch.bool, device=frames.device)
        else:
            mask = padding_mask.reshape(b * t, h, w).bool()
        if image_sizes is None:
            image_sizes = torch.tensor([[h, w]] * b, dtype=torch.long, device=frames.device)
        feats = self.backbone(x, t)
        masks = [F.interpolate(mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0] for f in feats]
        poses = [self.position_embedding(m).to(f.dtype) for f, m in zip(feats, masks)]

        srcs, lvl_masks, lvl_pos = [], [], []
        for lvl, (f, m, p) in enumerate(zip(feats[-3:], masks[-3:], poses[-3:])):
            srcs.append(self.input_proj[lvl](f))
            lvl_masks.append(m)
            lvl_pos.append(p)
        for lvl in range(3, self.num_feature_levels):
            src = self.input_proj[lvl](feats[-1] if lvl == 3 else srcs[-1])
            m = F.interpolate(mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            srcs.append(src)
            lvl_masks.append(m)
            lvl_pos.append(self.position_embedding(m).to(src.dtype))
        return VisualFeatures(srcs, lvl_masks, lvl_pos, feats[0], masks[0], poses[0], image_sizes, t)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TextFeatures:
        """input_ids, attention_mask: int64 [B, L] token ids of the model's tokenizer (RoBERTa, or BERT) ->
        ``TextFeatures``; padding = ``attention_mask == 0`` (default: ids equal to the encoder's pad id)."""
        pad = padding_mask(input_ids, attention_mask, self.config.text_encoder.pad_token_id)
        mask = attention_mask if attention_mask is not None else (~pad).long()
        out = self.text_encoder(input_ids=input_ids, attention_mask=mask)
        words = self.resizer(out.last_hidden_state)
        sentence = self.resizer(sentence_embedding(out, mask, self.config.sentence_embedding))
        return TextFeatures(words, pad, sentence)

    def decode(self, visual: VisualFeatures, text: TextFeatures, reference: bool = False) -> dict[str, Any]:
        """Everything that depends on the sentence. ``visual`` holds either as many clips as ``text`` has
        sentences, or one clip that is shared by all sentences. Returns the output dict (see class doc).

        A shared clip is not copied per sentence up front: the stride-4 lateral conv and self-attention of
        the cross-modal FPN (which do not see the text) run once for all sentences.
        ``reference=True`` computes like the original code instead (``fastpath.reference_mode``)."""
        if reference:
            with reference_mode():
                return self.decode(visual, text)
        b = text.word_features.shape[0]
        if reference_mode_enabled() or visual.batch_size != 1:
            visual = visual.expand(b)
        vb = visual.batch_size  # b, or 1 when the clip is shared
        t = visual.num_frames
        q = self.num_queries
        text_pos = self.text_pos(text.padding_mask).permute(1, 0, 2)  # [L, b, C]
        words = text.word_features.permute(1, 0, 2)  # [L, b, C]

        fused = []
        for src in visual.srcs:
            _, _, h, w = src.shape
            s = self.fusion_module(frames_to_sequence(src, vb, t), words, memory_key_padding_mask=text.padding_mask,
                                   pos=text_pos)
            fused.append(sequence_to_frames(s, b, t, h, w))
        level_masks, level_pos = visual.masks, visual.pos
        if vb != b:
            level_masks = [_repeat_clip(x, b) for x in level_masks]
            level_pos = [_repeat_clip(x, b) for x in level_pos]

        c = text.sentence_feature.shape[-1]
        tgt = text.sentence_feature[:, None, None, :].expand(b, t, q, c).reshape(b * t, q, c)
        tr = self.transformer(fused, level_masks, level_pos, tgt, self.query_embed.weight)
        hs, inter_refs = tr.hs, tr.inter_references

        classes, coords = [], []
        for lvl in range(hs.shape[0]):
            reference = inverse_sigmoid(tr.init_reference if lvl == 0 else inter_refs[lvl - 1])
            tmp = self.bbox_embed[lvl](hs[lvl])
            if reference.shape[-1] == 4:
                tmp = tmp + reference
            else:
                tmp = torch.cat([tmp[..., :2] + reference, tmp[..., 2:]], -1)
            coords.append(tmp.sigmoid().reshape(b, t, q, 4))
            # motion_queries: the score of a query in a frame also sees its trajectory over the clip
            h = hs[lvl] if self.motion_encoder is None else self.motion_encoder(hs[lvl], coords[-1], t)
            classes.append(self.class_embed[lvl](h).reshape(b, t, q, -1))

        mask_features = self.pixel_decoder(visual.fine_features, visual.fine_mask, visual.fine_pos, tr.memory,
                                           level_masks[:3], level_pos[:3], text.word_features,
                                           text.padding_mask, t)
        mask_features = mask_features.reshape(b, t, *mask_features.shape[1:])
        cfg = self.config
        masks = []
        for lvl in range(hs.shape[0]):
            params = self.controller(hs[lvl]).reshape(b, t, q, -1)
            refs = inter_refs[lvl, ..., :2].reshape(b, t, q, 2)
            masks.append(dynamic_mask_logits(mask_features, params, refs, visual.image_sizes.expand(b, 2),
                                             cfg.dynamic_mask_channels, cfg.dynamic_weight_nums,
                                             cfg.dynamic_bias_nums, rel_coord=cfg.rel_coord))

        out: dict[str, Any] = {"pred_logits": classes[-1], "pred_boxes": coords[-1], "pred_masks": masks[-1]}
        if cfg.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": bx, "pred_masks": m}
                                  for a, bx, m in zip(classes[:-1], coords[:-1], masks[:-1])]
        last_input = inter_refs[-2] if inter_refs.shape[0] >= 2 else tr.init_reference
        out["reference_points"] = last_input[..., :2].reshape(b, t, q, 2)
        return out

    def forward(self, frames: Tensor, input_ids: Tensor, attention_mask: Tensor,
                padding_mask: Tensor | None = None, image_sizes: Tensor | None = None,
                frame_indices: Tensor | None = None, clip_index: Tensor | None = None,
                return_features: bool = False) -> dict[str, Any]:
        """frames: [b, t, 3, H, W] normalised; input_ids / attention_mask: [b, L] (one sentence per clip);
        frame_indices: optional [b, k] frames to decode after the backbone (A2D / JHMDB: the annotated
        frame, the original's ``valid_indices``); the outputs then have ``k`` frames.
        clip_index: optional [s] clip of each of ``s`` sentences (input_ids [s, L]): the backbone runs once
        per clip and each sentence is decoded on its clip (outputs have batch ``s``).
        return_features: also return ``features`` (:func:`alignment_features`) for the training-only
        sentence-object alignment loss (``referformer.engine.alignment``)."""
        visual = self.encode_video(frames, padding_mask, image_sizes)
        if frame_indices is not None:
            visual = visual.select_frames(frame_indices)
        per_clip = visual
        if clip_index is not None:
            visual = visual.select_clips(clip_index)
        text = self.encode_text(input_ids, attention_mask)
        out = self.decode(visual, text)
        if return_features:
            out["features"] = alignment_features(per_clip, text, clip_index)
        return out


def alignment_features(visual: VisualFeatures, text: TextFeatures, clip_index: Tensor | None = None) -> dict[str, Any]:
    """What the sentence-object alignment term (``referformer.engine.alignment``) reads:
    ``{"visual": srcs[0] of each clip [n*t, C, H/8, W/8], "sentence": [s, C], "clip_index": [s],
    "num_frames": t}``; ``clip_index`` None = one clip per sentence (``s == n``)."""
    if clip_index is None:
        clip_index = torch.arange(text.sentence_feature.shape[0], device=visual.srcs[0].device)
    return {"visual": visual.srcs[0], "sentence": text.sentence_feature, "clip_index": clip_index,
            "num_frames": visual.num_frames}


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build modules without running their random initialisation (parameters stay uninitialised memory).

    For models whose every weight is loaded right after (checkpoints): saves ~10 s on RoBERTa-base.
    """
    names = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
             "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
    saved = {n: getattr(nn.init, n) for n in names if hasattr(nn.init, n)}
    no_hf_init: Any = contextlib.nullcontext()
    try:  # transformers >= 5
        from transformers.initialization import no_init_weights as no_hf_init_fn
        no_hf_init = no_hf_init_fn()
    except ImportError:
        try:  # transformers 4.x
            from transformers.modeling_utils import no_init_weights as no_hf_init_fn
            no_hf_init = no_hf_init_fn()
        except ImportError:
            pass
    try:
        for n in saved:
            setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
        with no_hf_init:
            yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def build_model(config: ModelConfig, init_weights: bool = True) -> ReferFormer:
    """A ReferFormer of ``config`` (nothing is downloaded). ``init_weights=False`` skips the random
    initialisation, for when every weight is loaded from a checkpoint right after."""
    if init_weights:
        return ReferFormer(config)
    with skip_weight_init():
        return ReferFormer(config)
