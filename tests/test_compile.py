"""``compile_model`` / ``Predictor(compile=True)``: the heavy parts are wrapped, outputs do not change.

Inductor itself takes minutes per shape on a CPU, so these tests compile with the ``eager`` backend
(dynamo tracing only); the inductor numbers are in docs/performance.md."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from referformer.errors import UserError
from referformer.inference.predictor import Predictor
from referformer.models import build_model, compile_model
from referformer.presets import tiny_config

IDS = torch.tensor([[0, 10, 11, 12, 2]])
MASK = torch.ones_like(IDS)


def test_compiled_referformer_gives_the_eager_outputs():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    frames = torch.randn(1, 2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(frames, IDS, MASK)
        compile_model(model, backend="eager")
        assert all(hasattr(getattr(model, name), "_orig_mod") for name in ("transformer", "pixel_decoder"))
        compiled = model(frames, IDS, MASK)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(compiled[key], eager[key], atol=1e-5, rtol=1e-5)
    # compiling twice does not wrap twice
    transformer = model.transformer
    assert compile_model(model, backend="eager").transformer is transformer


def test_compiled_refvos_gives_the_eager_outputs():
    from referformer.models.refvos import build_refvos
    from referformer.presets import refvos_tiny_config

    torch.manual_seed(0)
    model = build_refvos(refvos_tiny_config()).eval()
    frames = torch.randn(1, 1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[101, 10, 11, 102]])
    with torch.no_grad():
        eager = model(frames, ids, torch.ones_like(ids))["seg_logits"]
        compile_model(model, backend="eager")
        assert hasattr(model.backbone, "_orig_mod")
        torch.testing.assert_close(model(frames, ids, torch.ones_like(ids))["seg_logits"], eager, atol=1e-5, rtol=1e-5)


def test_predictor_compile_option_wraps_the_model():
    compiled = Predictor.from_pretrained("synthetic-tiny-v1", device="cpu", compile=True)
    assert all(hasattr(getattr(compiled.model, name), "_orig_mod") for name in ("transformer", "pixel_decoder"))
    assert not hasattr(Predictor.from_pretrained("synthetic-tiny-v1", device="cpu").model.pixel_decoder, "_orig_mod")


def test_model_without_compile_parts_is_a_user_error():
    with pytest.raises(UserError, match="compile_parts"):
        compile_model(nn.Linear(2, 2))
