"""Optional fused kernels. Nothing here is required: every kernel has a pure-PyTorch equivalent.

``triton_ms_deform_attn_or_none(fallback)`` returns the Triton multi-scale deformable attention
(dispatching what the kernel does not handle, e.g. CPU tensors, to ``fallback``) when ``triton``
imports and CUDA is available, else ``None``. Nothing here imports the model: the pure-PyTorch
path is handed in.
"""

from __future__ import annotations

import functools
from typing import Callable


def triton_ms_deform_attn_or_none(fallback: Callable) -> Callable | None:
    """The Triton deformable-attention entry point (same arguments as ``fallback``, which it calls
    where the kernel does not apply), or None when it cannot run here."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        from referformer.models.kernels.ms_deform_attn_triton import ms_deform_attn_triton_dispatch
    except Exception:  # triton missing or broken: fail soft, the pure-PyTorch path runs
        return None
    return functools.partial(ms_deform_attn_triton_dispatch, fallback=fallback)
