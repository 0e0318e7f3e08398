"""Reading a space-time memory by attention, and merging objects into one label per pixel.

The memory holds ``N`` positions (memory frames x ``h x w``), each with a key ``[C_k]`` and, per
object, a value ``[C_v]``. A query position reads ``sum_n softmax_n(s(q, k_n)) v_n`` with the
negative squared L2 distance as similarity, ``s(q, k) = (2 q.k - |k|^2) / sqrt(C_k)`` (STCN's; the
``-|q|^2`` term is the same for every memory position and cancels in the softmax).

Objects are predicted one by one; :func:`aggregate_logits` merges them as STM's soft aggregation:
the background probability is ``prod_k (1 - p_k)``, each channel's probability is clamped to
``[1e-7, 1 - 1e-7]`` and turned into a logit; a softmax over ``[background, objects]`` then gives
probabilities that sum to one (one label per pixel after an argmax).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["aggregate_logits", "memory_affinity", "probability_logits", "read_memory"]

_EPS = 1e-7


def memory_affinity(memory_key: Tensor, query_key: Tensor) -> Tensor:
    """``memory_key`` ``[B, C_k, N]``, ``query_key`` ``[B, C_k, M]`` -> attention weights ``[B, N, M]``
    (each column sums to one over the ``N`` memory positions)."""
    scale = 1.0 / math.sqrt(memory_key.shape[1])
    similarity = 2 * memory_key.transpose(1, 2) @ query_key - memory_key.pow(2).sum(1)[:, :, None]
    return torch.softmax(similarity * scale, dim=1)


def read_memory(query_key: Tensor, memory_key: Tensor, memory_value: Tensor) -> Tensor:
    """Read the memory at every query position.

    query_key: ``[B, C_k, h, w]``; memory_key: ``[B, C_k, N]``; memory_value: ``[B, K, C_v, N]``
    (``K`` objects). Returns ``[B, K, C_v, h, w]``.
    """
    b, _, h, w = query_key.shape
    k, cv = memory_value.shape[1:3]
    weights = memory_affinity(memory_key, query_key.flatten(2))  # [B, N, h*w]
    read = memory_value.flatten(1, 2) @ weights  # [B, K*C_v, h*w]
    return read.view(b, k, cv, h, w)


def aggregate_logits(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """STM's soft aggregation: per-object logits ``[B, K, H, W]`` -> logits ``[B, K + 1, H, W]`` of
    ``[background, object 1 .. K]`` whose softmax sums to one. Objects with ``valid`` ``[B, K]`` False
    get probability 0 (padding slots)."""
    probs = torch.sigmoid(logits.float())
    if valid is not None:
        probs = probs * valid[:, :, None, None].to(probs.dtype)
    return probability_logits(probs)


def probability_logits(probs: Tensor) -> Tensor:
    """Per-object probabilities ``[B, K, H, W]`` -> aggregated logits ``[B, K + 1, H, W]`` (see
    :func:`aggregate_logits`)."""
    background = torch.prod(1 - probs, dim=1, keepdim=True)
    merged = torch.cat([background, probs], dim=1).clamp(_EPS, 1 - _EPS)
    return torch.log(merged / (1 - merged))
