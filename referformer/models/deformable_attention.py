"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

``ms_deform_attn`` is the one function a fused kernel may replace: ``set_ms_deform_attn_impl``
swaps the implementation behind a single switch; the default is the pure-PyTorch
``grid_sample`` version, numerically the official ``ms_deform_attn_core_pytorch``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.models.fastpath import reference_mode_enabled
from referformer.models.kernels import triton_ms_deform_attn_or_none

MSDeformAttnFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def ms_deform_attn_pytorch(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Sample every level bilinearly and sum with the attention weights.

    value: [N, S, M, D] (S = sum of H_l * W_l, M heads, D channels per head);
    spatial_shapes: int64 [L, 2] (H_l, W_l); level_start_index: int64 [L] (unused here, kept
    for kernel compatibility); sampling_locations: [N, Lq, M, L, P, 2], (x, y) normalised to
    [0, 1] over each level; attention_weights: [N, Lq, M, L, P] -> output [N, Lq, M * D].
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for lid, (h, w) in enumerate(shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_list[lid].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = sampling_grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [N*M, D, Lq, P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


# Sampling points (x 4 corners) per chunk of ``ms_deform_attn_gather``: bounds its index/weight tensors.
GATHER_CHUNK_POINTS = 1 << 22


def ms_deform_attn_gather(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Same result as ``ms_deform_attn_pytorch`` (up to float rounding), one weighted gather for all levels.

    Every level is zero-padded by one pixel and all levels are packed into one table; the sampling
    positions are clamped to that border ([-1, W_l] x [-1, H_l], which keeps zero-padding semantics
    exactly), so each of the 4 bilinear corners is a valid table row. The bilinear weights times the
    attention weights are the ``per_sample_weights`` of one ``F.embedding_bag(mode="sum")`` over
    [N * Lq * M] bags of L * P * 4 rows: no per-level ``grid_sample`` outputs, no stack, no transposes.
    Works under autograd (w.r.t. value, locations and weights). Processed in chunks of frames. With
    fewer sampling points per frame than value positions (the decoder's queries) it defers to
    ``ms_deform_attn_pytorch``, which is cheaper there.
    """
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if lq * num_levels * num_points < s:
        # few queries (the decoder's): packing the whole value table would cost more than sampling
        return ms_deform_attn_pytorch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    per_frame = lq * m * num_levels * num_points * 4
    step = max(1, GATHER_CHUNK_POINTS // max(per_frame, 1))
    if n > step and not torch.is_grad_enabled():
        return torch.cat([ms_deform_attn_gather(value[i:i + step], spatial_shapes, level_start_index,
                                                sampling_locations[i:i + step], attention_weights[i:i + step])
                          for i in range(0, n, step)])
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    padded, starts, acc = [], [], 0
    for v, (h, w) in zip(value.split([h * w for h, w in shapes], 1), shapes):
        padded.append(F.pad(v.reshape(n, h, w, m * d), (0, 0, 1, 1, 1, 1)).reshape(n, (h + 2) * (w + 2), m * d))
        starts.append(acc)
        acc += (h + 2) * (w + 2)
    padded.append(value.new_zeros(n, shapes[-1][1] + 3, m * d))  # corner offsets of the last level stay inside
    table = torch.cat(padded, 1)  # [N, S', M * D]
    rows_per_frame = table.shape[1] * m
    # the row indices are computed as exact integers in float: at least float32 (autocast may give bf16)
    sampling_locations = sampling_locations.float() if sampling_locations.element_size() < 4 else sampling_locations
    attention_weights = attention_weights.to(sampling_locations.dtype)
    dtype, device = sampling_locations.dtype, sampling_locations.device

    def per_point(values: list[float]) -> Tensor:  # [L, P], contiguous: broadcasts over outer dims only (fast)
        return torch.tensor(values, dtype=dtype, device=device).view(-1, 1).expand(-1, num_points).contiguous()

    width = per_point([w for _, w in shapes])
    height = per_point([h for h, _ in shapes])
    # pixel coordinates of grid_sample(align_corners=False): loc * size - 0.5, clamped to the zero border
    x = torch.minimum((sampling_locations[..., 0] * width - 0.5).clamp_(min=-1.0), width)
    y = torch.minimum((sampling_locations[..., 1] * height - 0.5).clamp_(min=-1.0), height)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    wx1 = fx * attention_weights
    wx0 = attention_weights - wx1
    corner_weights = torch.stack([wx0 - fy * wx0, wx1 - fy * wx1, fy * wx0, fy * wx1], 3)  # [N, Lq, M, 4, L, P]
    # table row of the top-left corner, (frame * S' + position) * M + head; exact integers in float
    position = (y0 + 1) * per_point([w + 2 for _, w in shapes]) + x0 + per_point([st + 1 for st in starts])
    frame_head = (torch.arange(n, dtype=dtype, device=device).view(n, 1, 1, 1, 1) * rows_per_frame
                  + torch.arange(m, dtype=dtype, device=device).view(1, 1, m, 1, 1))
    index_dtype = torch.int32 if n * rows_per_frame < 2**24 else torch.int64
    if index_dtype == torch.int64:
        position, frame_head = position.double(), frame_head.double()
    top_left = (position.mul_(m) + frame_head).to(index_dtype)
    offsets = torch.tensor([[0, 1, w + 2, w + 3] for _, w in shapes], dtype=index_dtype, device=device) * m
    offsets = offsets.t()[:, :, None].expand(4, num_levels, num_points).contiguous()  # [4, L, P]
    rows = top_left[:, :, :, None] + offsets  # [N, Lq, M, 4, L, P]
    bag = num_levels * num_points * 4
    out = F.embedding_bag(rows.view(-1, bag), table.reshape(-1, d),
                          per_sample_weights=corner_weights.view(-1, bag).to(table.dtype), mode="sum")
    return out.view(n, lq, m * d)


def _default_impl() -> MSDeformAttnFn:
    """The fused Triton kernel when it can run (CUDA + triton), else the pure-PyTorch gather."""
    fn = triton_ms_deform_attn_or_none(fallback=ms_deform_attn_gather)
    return fn if fn is not None else ms_deform_attn_gather


_IMPL: MSDeformAttnFn | None = None  # chosen on first use (``_default_impl``) unless set


def set_ms_deform_attn_impl(fn: MSDeformAttnFn | None) -> None:
    """Replace the deformable-attention core (``None`` restores the automatic choice: the Triton kernel
    for CUDA tensors when available, else ``ms_deform_attn_gather``; ``reference_mode`` always uses
    ``ms_deform_attn_pytorch``)."""
    global _IMPL
    _IMPL = fn


def get_ms_deform_attn_impl() -> MSDeformAttnFn:
    """The active implementation (outside ``reference_mode``)."""
    global _IMPL
    if _IMPL is None:
        _IMPL = _default_impl()
    return _IMPL


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Dispatch to the active implementation (see ``ms_deform_attn_pytorch`` for shapes)."""
    fn = ms_deform_attn_pytorch if reference_mode_enabled() else get_ms_deform_attn_impl()
    return fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Deformable attention module (keys ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``)."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation (offsets on a ring around the reference point)."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                input_padding_mask: Tensor | None = None) -> Tensor:
        """query: [N, Lq, C]; reference_points: [N, Lq, L, 2] (x, y in [0, 1]) or [N, Lq, L, 4]
        (cx, cy, w, h); input_flatten: [N, S, C]; input_padding_mask: bool [N, S] (True = pad)
        -> [N, Lq, C]."""
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # (same values as the original's broadcasting; small operands expanded over the points first,
        # so that the big elementwise ops broadcast over outer dimensions only)
        p = self.n_points
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
            normalizer = normalizer[:, None, :].expand(self.n_levels, p, 2).contiguous()
            refs = reference_points[:, :, None, :, None, :].expand(n, lq, 1, self.n_levels, p, 2).contiguous()
            locations = refs + offsets / normalizer
        elif reference_points.shape[-1] == 4:
            refs = reference_points[:, :, None, :, None, :].expand(n, lq, 1, self.n_levels, p, 4).contiguous()
            locations = refs[..., :2] + offsets / self.n_points * refs[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4, got {tuple(reference_points.shape)}")
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
