"""Fused multi-scale deformable attention for CUDA, written in Triton (forward / inference only).

One program computes ``BLOCK_Q`` queries x ``D`` channels of one (frame, head): for every level and
point it loads the sampling location and attention weight, and accumulates the 4 bilinear corners
of the value map (zero outside, ``grid_sample(align_corners=False)`` conventions) in fp32 registers:
no [N*M, D, Lq, L*P] intermediate, one read of each sampled value row.

``ms_deform_attn_triton_dispatch`` uses it for CUDA tensors without autograd and a power-of-two
channels-per-head; everything else goes to the fallback it is given (the pure-PyTorch
``ms_deform_attn_gather`` of :mod:`referformer.models.deformable_attention`).
Correctness is tested against ``ms_deform_attn_pytorch`` in Triton's interpreter
(``TRITON_INTERPRET=1``, CPU) in ``tests/test_perf_triton.py``; its speed on GPU is unmeasured so far.
"""

from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _ms_deform_attn_fwd(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, S, Lq,
                        M: tl.constexpr, D: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                        BLOCK_Q: tl.constexpr):
    pid_q = tl.program_id(0)
    nm = tl.program_id(1)
    n = nm // M
    m = nm % M
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < Lq
    d = tl.arange(0, D)
    acc = tl.zeros((BLOCK_Q, D), dtype=tl.float32)
    for lvl in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
        w = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
        start = tl.load(starts_ptr + lvl).to(tl.int32)
        for pt in tl.static_range(P):
            point = (((n * Lq + q) * M + m) * L + lvl) * P + pt  # index into [N, Lq, M, L, P]
            lx = tl.load(loc_ptr + 2 * point, mask=q_ok, other=0.0).to(tl.float32)
            ly = tl.load(loc_ptr + 2 * point + 1, mask=q_ok, other=0.0).to(tl.float32)
            aw = tl.load(attn_ptr + point, mask=q_ok, other=0.0).to(tl.float32)
            x = lx * w.to(tl.float32) - 0.5
            y = ly * h.to(tl.float32) - 0.5
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            for dy in tl.static_range(2):
                for dx in tl.static_range(2):
                    xi = x0 + dx
                    yi = y0 + dy
                    wgt = (fx * dx + (1.0 - fx) * (1 - dx)) * (fy * dy + (1.0 - fy) * (1 - dy)) * aw
                    ok = q_ok & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                    row = (n * S + start + yi * w + xi) * M + m
                    row = tl.where(ok, row, 0)
                    vals = tl.load(value_ptr + row.to(tl.int64)[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
                    acc += vals.to(tl.float32) * wgt[:, None]
    out_rows = ((n * Lq + q) * M + m).to(tl.int64)
    tl.store(out_ptr + out_rows[:, None] * D + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None])


def ms_deform_attn_triton(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor, block_q: int = 64) -> Tensor:
    """Shapes as ``ms_deform_attn_pytorch``; D (channels per head) must be a power of two. Forward only."""
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    out = torch.empty(n, lq, m * d, device=value.device, dtype=value.dtype)
    grid = (triton.cdiv(lq, block_q), n * m)
    _ms_deform_attn_fwd[grid](value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
                              sampling_locations.contiguous(), attention_weights.contiguous(), out, s, lq,
                              M=m, D=d, L=num_levels, P=num_points, BLOCK_Q=block_q)
    return out


def kernel_applies(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor) -> bool:
    """CUDA tensors, no gradient needed, channels per head a power of two (>= 2)."""
    d = value.shape[-1]
    needs_grad = torch.is_grad_enabled() and (value.requires_grad or sampling_locations.requires_grad
                                              or attention_weights.requires_grad)
    return value.is_cuda and not needs_grad and d >= 2 and d & (d - 1) == 0


def ms_deform_attn_triton_dispatch(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                                   sampling_locations: Tensor, attention_weights: Tensor, *,
                                   fallback: Callable[..., Tensor]) -> Tensor:
    """The Triton kernel where ``kernel_applies``, else ``fallback`` (same arguments; the caller's
    pure-PyTorch ``ms_deform_attn_gather``, passed in so that this module needs nothing of the model)."""
    if kernel_applies(value, sampling_locations, attention_weights):
        return ms_deform_attn_triton(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return fallback(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
