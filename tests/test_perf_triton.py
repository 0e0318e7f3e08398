"""The Triton deformable-attention kernel equals the plain PyTorch one.

Runs in Triton's interpreter on the CPU (a subprocess with ``TRITON_INTERPRET=1``, which must be set
before triton is imported), and natively on CUDA when a GPU is present. Skipped without triton.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

SCRIPT = r"""
import torch
from referformer.models.deformable_attention import ms_deform_attn_pytorch
from referformer.models.kernels.ms_deform_attn_triton import ms_deform_attn_triton
g = torch.Generator().manual_seed(0)
device = "{device}"
shapes = torch.tensor([[6, 9], [3, 5], [2, 3], [1, 1]])
starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
n, m, d, lq, p = 2, 2, 4, 7, 3
value = torch.randn(n, int(shapes.prod(1).sum()), m, d, generator=g)
loc = torch.rand(n, lq, m, 4, p, 2, generator=g) * 1.6 - 0.3
loc[0, 0, 0, 0, 0] = torch.tensor([0.5 / 9, 0.5 / 6])
attn = torch.rand(n, lq, m, 4, p, generator=g).softmax(-1)
args = [x.to(device) for x in (value, shapes, starts, loc, attn)]
ref = ms_deform_attn_pytorch(*args)
out = ms_deform_attn_triton(*args, block_q=4)
torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
print("OK", (out - ref).abs().max().item())
"""


def test_triton_kernel_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(device="cpu")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernel_on_cuda():
    exec(SCRIPT.format(device="cuda"), {})
