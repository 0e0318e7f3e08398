"""Cross-modal FPN (``pixel_decoder``): text-aware top-down FPN giving the stride-4 mask features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from referformer.models.fusion import VisionLanguageBlock, frames_to_sequence, sequence_to_frames
from referformer.models.position import PositionEmbeddingSine1D


class ConvNormAct(nn.Conv2d):
    """Conv2d with an optional ``.norm`` and activation (detectron2's ``Conv2d`` wrapper; same keys)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True, norm: nn.Module | None = None, relu: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = norm
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def _c2_xavier_fill(module: nn.Conv2d) -> None:
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


class CrossModalFPNDecoder(nn.Module):
    """Keys ``adapter_{1..4}`` (lateral 1x1, GN(8)), ``layer_{1..4}`` (3x3, GN(8), ReLU),
    ``cross_attn_{1..4}`` (VisionLanguageBlock, sr 8/4/2/1), ``mask_features`` (3x3 with bias).
    Index 1 is stride 4 (backbone stage 1), 2..4 are strides 8/16/32 (encoder memory)."""

    SR_RATIOS = (8, 4, 2, 1)

    def __init__(self, feature_channels: list[int], conv_dim: int, mask_dim: int, nhead: int = 8,
                 dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        for idx, in_channels in enumerate(feature_channels):
            lateral = ConvNormAct(in_channels, conv_dim, 1, bias=False, norm=nn.GroupNorm(8, conv_dim))
            output = ConvNormAct(conv_dim, conv_dim, 3, padding=1, bias=False, norm=nn.GroupNorm(8, conv_dim),
                                 relu=True)
            _c2_xavier_fill(lateral)
            _c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
        self.mask_features = ConvNormAct(conv_dim, mask_dim, 3, padding=1)
        _c2_xavier_fill(self.mask_features)
        self.text_pos = PositionEmbeddingSine1D(conv_dim, normalize=True)
        for idx in range(len(feature_channels)):
            block = VisionLanguageBlock(conv_dim, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                        sr_ratio=self.SR_RATIOS[idx])
            for p in block.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            self.add_module(f"cross_attn_{idx + 1}", block)
        self.num_levels = len(feature_channels)

    def forward(self, fine_features: Tensor, fine_mask: Tensor, fine_pos: Tensor, memory: list[Tensor],
                memory_masks: list[Tensor], memory_poses: list[Tensor], text_features: Tensor, text_mask: Tensor,
                num_frames: int) -> Tensor:
        """fine_features: backbone stage 1 [(b t), C_1, H/4, W/4] with its padding mask bool [(b t), H/4, W/4]
        and 2-D positions [(b t), C, H/4, W/4]; memory / memory_masks / memory_poses: encoder maps at
        8x, 16x, 32x ([(b t), C, h_l, w_l]) with the backbone masks and positions of those levels;
        text_features: [b, L, C]; text_mask: bool [b, L] (True = padding)
        -> mask features [(b t), mask_dim, H/4, W/4]. The stride-4 inputs may hold one clip ([t, ...])
        shared by the b sentences: its lateral conv and self-attention then run once."""
        t = num_frames
        b = memory[0].shape[0] // t
        text_pos = self.text_pos(text_mask).permute(1, 0, 2)  # [L, b, C]
        text = text_features.permute(1, 0, 2)
        # top-down: 32x, 16x, 8x from the encoder memory, then 4x from the backbone
        inputs = list(memory[::-1]) + [fine_features]
        level_masks = list(memory_masks[::-1]) + [fine_mask]
        level_poses = list(memory_poses[::-1]) + [fine_pos]
        y = None
        for i, (x, m, pos) in enumerate(zip(inputs, level_masks, level_poses)):
            stage = self.num_levels - i
            lateral = getattr(self, f"adapter_{stage}")
            output = getattr(self, f"layer_{stage}")
            block = getattr(self, f"cross_attn_{stage}")
            h, w = pos.shape[-2:]
            xb = x.shape[0] // t  # b, or 1 for a stride-4 feature shared by all sentences
            cur = block(frames_to_sequence(lateral(x), xb, t), text, t=t, h=h, w=w,
                        tgt_key_padding_mask=m.reshape(xb, t * h * w), memory_key_padding_mask=text_mask,
                        pos=text_pos, query_pos=frames_to_sequence(pos, xb, t))
            cur = sequence_to_frames(cur, b, t, h, w)
            if y is not None:
                cur = cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest")
            y = output(cur)
        return self.mask_features(y)
