"""Sine position encodings (no weights): 2-D for feature maps, 1-D for word sequences.

Written by hand because exact compatibility with the original matters (the offsets, the
normalisation and the sin/cos interleaving all change the numbers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_features(embed: Tensor, num_pos_feats: int, temperature: float) -> Tensor:
    """Positions [...] -> [..., num_pos_feats]: sin on even and cos on odd channels, interleaved, with
    frequencies ``temperature ** (2 * (i // 2) / num_pos_feats)`` (DETR's sine encoding)."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=embed.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos = embed[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine2D(nn.Module):
    """Normalised 2-D sine encoding of Deformable DETR / ReferFormer (``backbone.1``).

    ``num_pos_feats`` channels per axis (hidden_dim / 2); output channels are [y-features, x-features].
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        """mask: bool [N, H, W], True on padding -> float32 [N, 2 * num_pos_feats, H, W]."""
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        pos_x = sine_features(x_embed, self.num_pos_feats, self.temperature)
        pos_y = sine_features(y_embed, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine1D(nn.Module):
    """1-D sine encoding over word positions (``text_pos``), normalised to 2*pi, sin/cos interleaved."""

    def __init__(self, num_pos_feats: int = 256, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        """mask: bool [B, L], True on padding -> float32 [B, L, num_pos_feats]."""
        not_mask = ~mask
        x_embed = not_mask.cumsum(1, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            x_embed = x_embed / (x_embed[:, -1:] + eps) * self.scale
        return sine_features(x_embed, self.num_pos_feats, self.temperature)
