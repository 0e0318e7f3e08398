"""Vision-language attention blocks: the early fusion before the encoder and the CM-FPN block.

Sequences are sequence-first ([S, B, C]) as ``nn.MultiheadAttention`` defaults to, like the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.models import fastpath
from referformer.models.fastpath import chunking_applies


def frames_to_sequence(x: Tensor, b: int, t: int) -> Tensor:
    """Feature maps ``[(b t), c, h, w]`` -> the sequence-first tokens ``[(t h w), b, c]`` the blocks take."""
    _, c, h, w = x.shape
    return x.reshape(b, t, c, h, w).permute(1, 3, 4, 0, 2).reshape(t * h * w, b, c)


def sequence_to_frames(x: Tensor, b: int, t: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`frames_to_sequence`: ``[(t h w), b, c]`` -> ``[(b t), c, h, w]``."""
    c = x.shape[-1]
    return x.reshape(t, h, w, b, c).permute(3, 0, 4, 1, 2).reshape(b * t, c, h, w)


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class VisionLanguageFusionModule(nn.Module):
    """Early fusion (``fusion_module``): visual tokens attend to the words; the visual feature is
    multiplied element-wise by the attention output (no residual, no norm), as in the original."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None,
                pos: Tensor | None = None, query_pos: Tensor | None = None) -> Tensor:
        """tgt: visual [S, B, C] (or [S, 1, C]: one clip shared by the B sentences); memory: words [L, B, C];
        pos: text positions [L, B, C]; memory_key_padding_mask: bool [B, L] (True = padding) -> [S, B, C]."""
        if tgt.shape[1] != memory.shape[1]:
            tgt = tgt.expand(-1, memory.shape[1], -1)
        tgt2 = self.multihead_attn(query=_with_pos(tgt, query_pos), key=_with_pos(memory, pos), value=memory,
                                   key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        return tgt * tgt2


class VisionLanguageBlock(nn.Module):
    """CM-FPN block (``pixel_decoder.cross_attn_{i}``), post-norm:
    spatially reduced self-attention over all t*h*w tokens of the clip, cross-attention to the words, FFN.

    With ``sr_ratio > 1`` q, k and v are nearest-downsampled to (int(h / sr), int(w / sr)) and the
    attention output is bilinearly upsampled back (align_corners=False), as in the original.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 sr_ratio: int = 1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.sr_ratio = sr_ratio

    def forward(self, tgt: Tensor, memory: Tensor, t: int, h: int, w: int,
                tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                pos: Tensor | None = None, query_pos: Tensor | None = None) -> Tensor:
        """tgt, query_pos: [t*h*w, B, C] (frame-major); memory, pos: [L, B, C];
        tgt_key_padding_mask: bool [B, t*h*w]; memory_key_padding_mask: bool [B, L] -> [t*h*w, B, C].

        ``tgt`` / ``query_pos`` / ``tgt_key_padding_mask`` may also hold a single clip (batch 1) shared by
        the B sentences of ``memory``: the self-attention, which does not see the text, then runs once."""
        b, c = tgt.shape[1], tgt.shape[2]
        q = k = _with_pos(tgt, query_pos)
        if self.sr_ratio > 1:
            # Clamped to >= 1 so that tiny inputs work (the original would fail there).
            new_h, new_w = max(1, int(h * 1.0 / self.sr_ratio)), max(1, int(w * 1.0 / self.sr_ratio))

            def down(x: Tensor) -> Tensor:  # [t*h*w, B, C] -> [t*nh*nw, B, C]
                x = x.reshape(t, h, w, b, c).permute(3, 0, 4, 1, 2).reshape(b * t, c, h, w)
                x = F.interpolate(x, size=(new_h, new_w), mode="nearest")
                return x.reshape(b, t, c, new_h, new_w).permute(1, 3, 4, 0, 2).reshape(t * new_h * new_w, b, c)

            q, k, v = down(q), down(k), down(tgt)
            mask = None
            if tgt_key_padding_mask is not None:
                m = tgt_key_padding_mask.reshape(1, b * t, h, w).float()
                mask = F.interpolate(m, size=(new_h, new_w), mode="nearest").bool()[0].reshape(b, -1)
        else:
            v, mask = tgt, tgt_key_padding_mask
        tgt2 = self.self_attn(q, k, value=v, key_padding_mask=mask, need_weights=False)[0]
        if self.sr_ratio > 1:
            tgt2 = tgt2.reshape(t, new_h, new_w, b, c).permute(3, 0, 4, 1, 2).reshape(b * t, c, new_h, new_w)
            tgt2 = F.interpolate(tgt2, size=(h, w), mode="bilinear", align_corners=False)
            tgt2 = tgt2.reshape(b, t, c, h, w).permute(1, 3, 4, 0, 2).reshape(t * h * w, b, c)
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        if tgt.shape[1] != memory.shape[1]:
            tgt = tgt.expand(-1, memory.shape[1], -1)
            query_pos = None if query_pos is None else query_pos.expand(-1, memory.shape[1], -1)
        if chunking_applies(self) and tgt.shape[0] * tgt.shape[1] > fastpath.TOKEN_CHUNK:
            return self._text_and_ffn_chunked(tgt, memory, memory_key_padding_mask, pos, query_pos)
        tgt2 = self.multihead_attn(query=_with_pos(tgt, query_pos), key=_with_pos(memory, pos), value=memory,
                                   key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))

    def _text_and_ffn_chunked(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None,
                              pos: Tensor | None, query_pos: Tensor | None) -> Tensor:
        """Cross-attention to the words + FFN, ``fastpath.TOKEN_CHUNK`` rows (tokens x sentences) at a time
        (eval): the same values as the plain path, without materialising [t*h*w, B, 2048] activations.
        tgt: [T, B, C] -> [T, B, C]."""
        out = torch.empty_like(tgt, memory_format=torch.contiguous_format)
        key = _with_pos(memory, pos)
        step = max(1, fastpath.TOKEN_CHUNK // tgt.shape[1])
        for start in range(0, tgt.shape[0], step):
            x = tgt[start:start + step]
            q = x if query_pos is None else x + query_pos[start:start + step]
            x2 = self.multihead_attn(query=q, key=key, value=memory, key_padding_mask=memory_key_padding_mask,
                                     need_weights=False)[0]
            x = self.norm2(x + x2)
            out[start:start + step] = self.norm3(x + self.linear2(F.relu(self.linear1(x))))
        return out
