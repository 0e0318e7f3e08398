"""Fast inference paths and the switch back to the plain ("reference") computation.

The fast paths give the same outputs as the original computation up to float rounding (fp32:
~1e-6 relative; checked by ``tests/test_perf_*.py`` and the fixture tests). They differ only in
*how* they compute:

* ``chunked_ffn`` and the CM-FPN block's chunked text attention + FFN: the 256 -> 2048 -> 256 FFNs
  over chunks of tokens (the hidden activations of every stride-4 pixel of a long clip would
  otherwise take gigabytes);
* the multi-scale deformable attention gathers with precomputed bilinear weights
  (``deformable_attention.ms_deform_attn_gather``), the dynamic mask head uses batched matmuls,
  and ``ReferFormer.decode`` computes the sentence-independent parts once for all sentences.

``reference_mode()`` turns all of this off: the model then computes like the original code (the
benchmarks compare both in one run). Autograd works on both paths; training uses the fast paths
too unless inside ``reference_mode()``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_REFERENCE = False
# Rows per chunk for the token-wise work (FFNs, CM-FPN text attention); bounds the peak memory.
TOKEN_CHUNK = 16384


def reference_mode_enabled() -> bool:
    """Whether the plain, original-like computation is active (see ``reference_mode``)."""
    return _REFERENCE


@contextlib.contextmanager
def reference_mode(enabled: bool = True) -> Iterator[None]:
    """Compute like the original code inside this block: per-level ``grid_sample`` deformable
    attention, visual features copied per sentence, unchunked token-wise layers, grouped-conv mask
    head. For benchmarks and equality tests."""
    global _REFERENCE
    previous = _REFERENCE
    _REFERENCE = enabled
    try:
        yield
    finally:
        _REFERENCE = previous


def chunking_applies(module: nn.Module) -> bool:
    """Token chunking is used in eval-like calls: no autograd, no active dropout, not ``reference_mode``."""
    return not _REFERENCE and not torch.is_grad_enabled() and not module.training


def chunked_ffn(x: Tensor, linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module,
                chunk: int | None = None) -> Tensor:
    """``linear2(dropout(relu(linear1(x))))`` over the leading dimension in chunks of ``chunk`` rows.

    x: [..., C] -> [..., C]. Chunked only without autograd (the backward keeps every chunk's
    activations anyway) and outside ``reference_mode``."""
    chunk = chunk or TOKEN_CHUNK
    flat = x.reshape(-1, x.shape[-1])
    if not chunking_applies(dropout) or flat.shape[0] <= chunk:
        return linear2(dropout(F.relu(linear1(x))))
    out = flat.new_empty(flat.shape[0], linear2.out_features)
    for start in range(0, flat.shape[0], chunk):
        part = F.relu(linear1(flat[start:start + chunk]), inplace=True)
        torch.addmm(linear2.bias, part, linear2.weight.t(), out=out[start:start + chunk])
    return out.view(*x.shape[:-1], linear2.out_features)
