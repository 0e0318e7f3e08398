"""The fast inference paths equal the plain (original-like) ones: deformable attention, mask head,
chunked FFN, and the whole model decoding several sentences over one shared clip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from referformer.models import build_model
from referformer.models import deformable_attention as msda
from referformer.models import fastpath
from referformer.models.fastpath import chunked_ffn, reference_mode
from referformer.models.mask_head import dynamic_mask_logits, dynamic_mask_logits_matmul
from referformer.presets import get_preset


def _msda_inputs(n=2, m=2, d=4, lq=9, points=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 9], [3, 5], [2, 3], [1, 1]])
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    s = int(shapes.prod(1).sum())
    levels = shapes.shape[0]
    value = torch.randn(n, s, m, d, generator=g)
    # include points far outside, on the border and exactly on pixel centres
    loc = torch.rand(n, lq, m, levels, points, 2, generator=g) * 1.6 - 0.3
    loc[0, 0, 0, 0, 0] = torch.tensor([0.5 / 9, 0.5 / 6])
    loc[0, 0, 0, 0, 1] = torch.tensor([1.0, 1.0])
    loc[0, 0, 0, 0, 2] = torch.tensor([0.0, -0.05])
    attn = torch.rand(n, lq, m, levels, points, generator=g).softmax(-1)
    return value, shapes, starts, loc, attn


def test_gather_deformable_attention_equals_grid_sample():
    args = _msda_inputs()
    ref = msda.ms_deform_attn_pytorch(*args)
    out = msda.ms_deform_attn_gather(*args)
    assert out.shape == ref.shape == (2, 9, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_gather_deformable_attention_chunked(monkeypatch):
    args = _msda_inputs(n=5)
    ref = msda.ms_deform_attn_pytorch(*args)
    monkeypatch.setattr(msda, "GATHER_CHUNK_POINTS", 1)  # one frame per chunk
    with torch.no_grad():
        out = msda.ms_deform_attn_gather(*args)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_gather_deformable_attention_gradients_match():
    grads = []
    for fn in (msda.ms_deform_attn_pytorch, msda.ms_deform_attn_gather):
        value, shapes, starts, loc, attn = _msda_inputs(seed=1)
        loc = loc.clamp(0.02, 0.98)  # inside the maps, and off the exact pixel centres (kinks) set above
        loc[0, 0, 0, 0, :2] = torch.tensor([0.31, 0.47])
        value.requires_grad_(True)
        loc.requires_grad_(True)
        attn.requires_grad_(True)
        fn(value, shapes, starts, loc, attn).pow(2).sum().backward()
        grads.append((value.grad, loc.grad, attn.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_reference_mode_switches_deformable_attention(monkeypatch):
    calls = []
    monkeypatch.setattr(msda, "ms_deform_attn_pytorch", lambda *a: calls.append("plain") or a[0].new_zeros(1))
    msda.set_ms_deform_attn_impl(lambda *a: calls.append("fast") or a[0].new_zeros(1))
    try:
        args = _msda_inputs()
        msda.ms_deform_attn(*args)
        with reference_mode():
            msda.ms_deform_attn(*args)
        assert calls == ["fast", "plain"]
    finally:
        msda.set_ms_deform_attn_impl(None)
    assert msda.get_ms_deform_attn_impl() is msda.ms_deform_attn_gather  # CPU-only machine or no triton


def test_matmul_mask_head_equals_grouped_conv():
    g = torch.Generator().manual_seed(0)
    b, t, q, c, h, w, ch = 2, 3, 4, 6, 5, 7, 3
    weight_nums, bias_nums = [(c + 2) * ch, ch * ch, ch], [ch, ch, 1]
    feats = torch.randn(b, t, c, h, w, generator=g)
    params = torch.randn(b, t, q, sum(weight_nums) + sum(bias_nums), generator=g) * 0.3
    refs = torch.rand(b, t, q, 2, generator=g)
    sizes = torch.tensor([[20, 28], [18, 25]])
    for rel in (True, False):
        wn = weight_nums if rel else [c * ch, ch * ch, ch]
        p = params[..., :sum(wn) + sum(bias_nums)]
        with reference_mode():
            ref = dynamic_mask_logits(feats, p, refs, sizes, ch, wn, bias_nums, rel_coord=rel)
        out = dynamic_mask_logits_matmul(feats, p, refs, sizes, ch, wn, bias_nums, rel_coord=rel)
        assert out.shape == (b, t, q, h, w)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)


def test_chunked_ffn_equals_plain():
    torch.manual_seed(0)
    l1, l2, drop = nn.Linear(8, 32), nn.Linear(32, 8), nn.Dropout(0.1).eval()
    x = torch.randn(3, 25, 8)
    with torch.no_grad():
        ref = l2(torch.relu(l1(x)))
        out = chunked_ffn(x, l1, l2, drop, chunk=7)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny").config).eval()
    frames = torch.randn(1, 3, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[0, 10, 11, 12, 2, 1], [0, 20, 21, 22, 23, 2], [0, 30, 31, 2, 1, 1]])
    return model, frames, ids, (ids != 1).long()


def _assert_outputs_equal(out, ref):
    for key in ("pred_logits", "pred_boxes", "reference_points"):
        torch.testing.assert_close(out[key], ref[key], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_masks"], ref["pred_masks"], atol=1e-3, rtol=1e-4)
    for a, r in zip(out["aux_outputs"], ref["aux_outputs"]):
        torch.testing.assert_close(a["pred_boxes"], r["pred_boxes"], atol=1e-4, rtol=0)


def test_tiny_model_shared_clip_decode_equals_reference(tiny, monkeypatch):
    """Fast decode of 3 sentences over one shared clip (with tiny chunks, so that every chunked loop
    runs several times) == the original-like decode (clip copied per sentence, plain paths)."""
    model, frames, ids, mask = tiny
    monkeypatch.setattr(fastpath, "TOKEN_CHUNK", 50)
    monkeypatch.setattr(msda, "GATHER_CHUNK_POINTS", 1)
    with torch.inference_mode():
        visual = model.encode_video(frames)
        text = model.encode_text(ids, mask)
        ref = model.decode(visual, text, reference=True)
        out = model.decode(visual, text)
    _assert_outputs_equal(out, ref)


def test_tiny_model_forward_fast_equals_reference(tiny):
    model, frames, ids, mask = tiny
    with torch.inference_mode():
        with reference_mode():
            ref = model(frames, ids[:1], mask[:1])
        out = model(frames, ids[:1], mask[:1])
    _assert_outputs_equal(out, ref)


def test_tiny_model_runs_under_bf16_autocast(tiny):
    """The fast paths accept mixed dtypes (autocast: bf16 values, fp32 locations and weights)."""
    model, frames, ids, mask = tiny
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.decode(model.encode_video(frames), model.encode_text(ids, mask))
    assert out["pred_masks"].shape[:3] == (3, 3, model.config.num_queries)
    assert torch.isfinite(out["pred_masks"].float()).all() and torch.isfinite(out["pred_boxes"].float()).all()
