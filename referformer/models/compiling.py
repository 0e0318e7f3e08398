"""``torch.compile`` for inference: wrap the heavy parts of a model, keep the rest eager.

The parts are named by the model class (``compile_parts``: ReferFormer's deformable transformer and
CM-FPN, RefVOS's DeepLab backbone). Only those are compiled because the rest (text encoder,
mask head, pre/post-processing) is small or changes shape with every sentence batch. Compiling does
not change what is computed: outputs equal the eager ones up to float rounding (measured in
docs/performance.md). The first call with each new input shape compiles (minutes on a CPU); use it
for long videos or many videos of one size. State-dict keys of a compiled model gain ``_orig_mod.``:
compile after loading weights, and save from an uncompiled model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from referformer.errors import UserError


def compile_model(model: nn.Module, **options: Any) -> nn.Module:
    """Replace each of ``model.compile_parts`` by ``torch.compile(part, dynamic=True, **options)`` in
    place and return ``model``. ``options``: ``torch.compile`` keywords (``mode``, ``backend``, ...)."""
    parts = getattr(type(model), "compile_parts", None)
    if not parts:
        raise UserError(f"{type(model).__name__} does not name parts to compile (compile_parts)")
    options = {"dynamic": True, **options}
    for name in parts:
        part = getattr(model, name)
        if not hasattr(part, "_orig_mod"):  # already compiled: torch.compile's wrapper keeps the original here
            setattr(model, name, torch.compile(part, **options))
    return model
