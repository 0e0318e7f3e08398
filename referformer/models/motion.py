"""Motion-aware queries (our option ``ModelConfig.motion_queries``; off in every official preset).

In the original, the deformable decoder runs per frame, so with an image backbone a query's score in a
frame depends on that frame and the sentence only (ARCHITECTURE.md 5): "the square moving left"
cannot be told from a still square by the score that picks the query. :class:`MotionQueryEncoder` is a
small temporal layer between the decoder and the class head: for every query of every clip it takes
the query's per-frame decoder embeddings and its predicted boxes (with their frame-to-frame
differences) over the clip's frames, runs one post-norm transformer layer over time (self-attention
across the frames of *that query*, sine position of the frame index, FFN) and adds the result to the
embedding the class head reads. Boxes and masks still come from the per-frame embeddings; only the
scores see the trajectory. Its output projection starts at zero, so a freshly built model scores like
one without the option (and a checkpoint trained without it can be fine-tuned with it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.models.heads import MLP

__all__ = ["MotionQueryEncoder", "VELOCITY_SCALE", "frame_position_embedding", "trajectory_features"]

# Box steps between frames are a few hundredths of the image (3-5 px per frame at 128 px in the synthetic
# benchmark): scaled up so that they are not drowned by the absolute box values at initialisation.
VELOCITY_SCALE = 10.0


def trajectory_features(boxes: Tensor) -> Tensor:
    """boxes: [b, t, q, 4] (cx, cy, w, h in [0, 1]) -> [b, t, q, 12]: the box, its step from the previous
    frame and its step to the next one (zero where there is no such frame), the steps times
    ``VELOCITY_SCALE``."""
    step = boxes[:, 1:] - boxes[:, :-1]  # [b, t-1, q, 4]
    zero = boxes.new_zeros(boxes[:, :1].shape)
    backward = torch.cat([zero, step], 1) * VELOCITY_SCALE
    forward = torch.cat([step, zero], 1) * VELOCITY_SCALE
    return torch.cat([boxes, backward, forward], -1)


def frame_position_embedding(num_frames: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[t, dim] sine/cosine embedding of the frame index 0..t-1 (interleaved, temperature 10000)."""
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(num_frames, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return pe.to(dtype)


class MotionQueryEncoder(nn.Module):
    """One temporal transformer layer per query over the frames of its clip (keys ``motion_encoder.*``).

    ``forward(hs [b*t, q, C], boxes [b, t, q, 4], num_frames t) -> [b*t, q, C]`` = ``hs + out_proj(y)``,
    ``y`` = the layer's output over the ``t`` tokens ``hs + box_embed(trajectory) + frame position`` of each
    (clip, query). The boxes enter detached: the class loss does not move the box regression.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.box_embed = MLP(12, d_model, d_model, 2)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, hs: Tensor, boxes: Tensor, num_frames: int) -> Tensor:
        bt, q, c = hs.shape
        b, t = bt // num_frames, num_frames
        x = hs.reshape(b, t, q, c) + self.box_embed(trajectory_features(boxes.detach()))
        x = x + frame_position_embedding(t, c, hs.device, hs.dtype)[None, :, None]
        x = x.permute(0, 2, 1, 3).reshape(b * q, t, c)  # one sequence of t frames per (clip, query)
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        x = self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        y = x.reshape(b, q, t, c).permute(0, 2, 1, 3).reshape(bt, q, c)
        return hs + self.out_proj(y)
