"""Optional fused kernels. Nothing here is required: every kernel has a pure-PyTorch equivalent.

``triton_ms_deform_attn_or_none()`` returns the Triton multi-scale deformable attention (dispatching
CPU tensors to the pure-PyTorch gather) when ``triton`` imports and CUDA is available, else ``None``.
"""

from __future__ import annotations

from typing import Callable


def triton_ms_deform_attn_or_none() -> Callable | None:
    """The Triton deformable-attention entry point, or None when it cannot run here."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        from referformer.models.kernels.ms_deform_attn_triton import ms_deform_attn_triton_dispatch
    except Exception:  # triton missing or broken: fail soft, the pure-PyTorch path runs
        return None
    return ms_deform_attn_triton_dispatch
