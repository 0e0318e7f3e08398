"""F_Gnd: per-frame grounding of tracklets in a sentence (Liang et al. 2021, section 3.2), and the
pooling that makes tracklet tokens.

Shapes: ``B`` sentences (or clips), ``P`` tracklets, ``T`` frames, ``L`` words, ``C`` visual channels,
``Dt`` text width, ``D = d_model``.

**Tracklet tokens** (:func:`masked_average_pool`): tau_p^t = the average of the frame's feature map
``I_t`` inside the tracklet's mask at ``t``. The mask is brought to the feature size by area averaging
(each feature cell weighs the fraction of it the mask covers), so a small object still has a token;
a tracklet absent at ``t`` (empty mask) gets a zero feature and ``present[p, t] = False``.

**Per-frame grounding** (:class:`GroundingTransformer`): for each frame ``t`` on its own, the sequence
``[proj_v(tau_1^t) + e_v, ..., proj_v(tau_P^t) + e_v ; proj_l(w_1) + e_l, ..., proj_l(w_L) + e_l]``
(``proj``: linear + LayerNorm to ``D``; ``e_v`` / ``e_l``: learned modal embeddings; an absent
tracklet's token also gets the learned ``e_absent``) goes through an ``nn.TransformerEncoder``
(batch first, no positional encoding: the tracklets are a set, the words keep the order the text
encoder gave them). A 2-layer MLP gives one logit per tracklet, a softmax over the unpadded tracklets
``s_p^t`` (each frame's scores sum to one); a tracklet's score is the mean of ``s_p^t`` over the frames.

**Motion (our extension, off in the paper's configuration).** With ``motion=True`` each tracklet
token also gets ``box_mlp(b_p^t) + trajectory_mlp(traj_p)``, where ``b_p^t = (cx, cy, w, h, present)``
is its box at ``t`` normalised by the frame size (zeros when absent) and ``traj_p`` the concatenation of
those five numbers at ``motion_samples`` evenly spaced times of the clip (linear interpolation
between frames, ``align_corners=True``: the first and the last frame are always samples). Both MLPs
are ``Linear -> ReLU -> Linear`` to ``D``. So the per-frame token knows where the tracklet is and how it
moves over the whole clip ("the car moving left"), which the paper's token (appearance alone) cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BOX_FEATURES", "GroundingOutput", "GroundingTransformer", "grounding_loss", "masked_average_pool",
           "normalized_boxes"]

BOX_FEATURES = 5  # cx, cy, w, h (fractions of the frame) and present (0 / 1)


def masked_average_pool(features: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Average of each frame's features inside each tracklet's mask.

    features: float ``[T, C, h, w]``; masks: bool or float ``[P, T, H, W]`` (any size; resized to
    ``h x w`` by area averaging). Returns (tokens ``[P, T, C]``: sum of weight x feature over the sum
    of weights, zeros where the mask is empty; present bool ``[P, T]``)."""
    p, t = masks.shape[:2]
    if features.shape[0] != t:
        raise ValueError(f"{features.shape[0]} feature maps for masks of {t} frames")
    weights = masks.to(features.dtype).reshape(p * t, 1, *masks.shape[-2:])
    if weights.shape[-2:] != features.shape[-2:]:
        weights = F.interpolate(weights, size=features.shape[-2:], mode="area")
    weights = weights.view(p, t, -1)  # [P, T, h*w]
    total = torch.einsum("ptn,tcn->ptc", weights, features.flatten(2))
    area = weights.sum(-1)
    present = area > 0
    return total / area.clamp(min=1e-12)[..., None] * present[..., None], present


def normalized_boxes(masks: Tensor) -> Tensor:
    """bool ``[..., H, W]`` masks -> ``[..., 5]``: ``(cx, cy, w, h, present)``, the tight box in fractions
    of the frame (pixel edges: a mask covering columns 0..W-1 has ``w = 1``); zeros where empty."""
    height, width = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)  # [..., H], [..., W]
    present = rows.any(-1)

    def extent(hit: Tensor, size: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(size, device=hit.device)
        first = torch.where(hit, index, size).amin(-1)
        last = torch.where(hit, index, -1).amax(-1) + 1
        return first.to(torch.float32) / size, last.to(torch.float32) / size

    y0, y1 = extent(rows, height)
    x0, x1 = extent(cols, width)
    boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, torch.ones_like(x0)], dim=-1)
    return boxes * present[..., None]


@dataclass
class GroundingOutput:
    """F_Gnd's answer for ``B`` sentences over ``P`` tracklets and ``T`` frames.

    logits: ``[B, P, T]`` (padded tracklets ``-inf``); frame_scores: ``[B, P, T]`` s_p^t, the softmax
    over tracklets at each frame (padded tracklets 0); scores: ``[B, P]`` mean of s_p^t over frames.
    """

    logits: Tensor
    frame_scores: Tensor
    scores: Tensor


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class GroundingTransformer(nn.Module):
    """Per-frame tracklet-language grounding (see the module docstring).

    Args:
        visual_dim: ``C`` of the tracklet tokens; text_dim: ``Dt`` of the word features.
        d_model, num_layers, num_heads, ffn_dim, dropout: the ``nn.TransformerEncoder``.
        mlp_dim: hidden width of the 2-layer scoring MLP.
        motion: add the box and trajectory embeddings; motion_samples: trajectory samples.
    """

    def __init__(self, visual_dim: int, text_dim: int, d_model: int = 768, num_layers: int = 4, num_heads: int = 12,
                 ffn_dim: int = 3072, mlp_dim: int = 768, dropout: float = 0.1, motion: bool = False,
                 motion_samples: int = 8) -> None:
        super().__init__()
        self.motion, self.motion_samples = motion, motion_samples
        self.visual_proj = nn.Sequential(nn.Linear(visual_dim, d_model), nn.LayerNorm(d_model))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.LayerNorm(d_model))
        self.visual_embed = nn.Parameter(torch.randn(d_model) * 0.02)  # e_v
        self.text_embed = nn.Parameter(torch.randn(d_model) * 0.02)  # e_l
        self.absent_embed = nn.Parameter(torch.randn(d_model) * 0.02)  # e_absent
        if motion:
            self.box_mlp = _mlp(BOX_FEATURES, d_model, d_model)
            self.trajectory_mlp = _mlp(BOX_FEATURES * motion_samples, d_model, d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ffn_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.score_mlp = _mlp(d_model, mlp_dim, 1)

    def trajectory(self, boxes: Tensor) -> Tensor:
        """``boxes`` ``[B, P, T, 5]`` -> ``[B, P, 5 * motion_samples]``: the boxes resampled at
        ``motion_samples`` evenly spaced times (linear, first and last frame included), time-major."""
        b, p, t, f = boxes.shape
        series = boxes.reshape(b * p, t, f).transpose(1, 2)  # [B*P, 5, T]
        if t == 1:
            series = series.expand(-1, -1, 2)
        sampled = F.interpolate(series, size=self.motion_samples, mode="linear", align_corners=True)
        return sampled.transpose(1, 2).reshape(b, p, -1)

    def forward(self, tokens: Tensor, words: Tensor, word_padding: Tensor | None = None,
                tracklet_padding: Tensor | None = None, present: Tensor | None = None,
                boxes: Tensor | None = None) -> GroundingOutput:
        """Score every tracklet at every frame.

        tokens: ``[B, P, T, C]`` pooled tracklet features; words: ``[B, L, Dt]``; word_padding: bool
        ``[B, L]`` (True = padding); tracklet_padding: bool ``[B, P]`` (True = no tracklet in this
        slot; every row needs one real tracklet); present: bool ``[B, P, T]`` (default: all present);
        boxes: ``[B, P, T, 5]`` (:func:`normalized_boxes`), required when ``motion``.
        """
        b, p, t, _ = tokens.shape
        length = words.shape[1]
        if tracklet_padding is None:
            tracklet_padding = torch.zeros((b, p), dtype=torch.bool, device=tokens.device)
        if word_padding is None:
            word_padding = torch.zeros((b, length), dtype=torch.bool, device=tokens.device)
        visual = self.visual_proj(tokens) + self.visual_embed
        if present is not None:
            visual = visual + (~present)[..., None].to(visual.dtype) * self.absent_embed
        if self.motion:
            if boxes is None:
                raise ValueError("this GroundingTransformer has motion=True: pass the tracklets' boxes [B, P, T, 5]")
            visual = visual + self.box_mlp(boxes) + self.trajectory_mlp(self.trajectory(boxes))[:, :, None]
        text = self.text_proj(words) + self.text_embed  # [B, L, D]
        # one sequence per (sentence, frame): [P tracklet tokens ; L word tokens]
        visual = visual.transpose(1, 2).reshape(b * t, p, -1)
        text = text[:, None].expand(-1, t, -1, -1).reshape(b * t, length, -1)
        padding = torch.cat([tracklet_padding, word_padding], dim=1)[:, None].expand(-1, t, -1).reshape(b * t, -1)
        out = self.encoder(torch.cat([visual, text], dim=1), src_key_padding_mask=padding)
        logits = self.score_mlp(out[:, :p]).view(b, t, p).transpose(1, 2)  # [B, P, T]
        logits = logits.masked_fill(tracklet_padding[:, :, None], float("-inf"))
        frame_scores = torch.softmax(logits, dim=1).nan_to_num(0.0)
        return GroundingOutput(logits, frame_scores, frame_scores.mean(dim=2))


def grounding_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The training loss of F_Gnd: cross-entropy over the tracklets at every frame, averaged over the
    ``B x T`` (sentence, frame) pairs. logits: ``[B, P, T]`` (padded ``-inf``); target: int64 ``[B]``,
    the index of the tracklet that matches the referred object (highest tracklet-IoU with it)."""
    b, _, t = logits.shape
    return F.cross_entropy(logits, target[:, None].expand(b, t))
