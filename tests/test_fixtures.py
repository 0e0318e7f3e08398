"""Our model vs. the original code on every shared fixture (weights regenerated with detweights.py).

ResNet-50 (model-core issue), Swin-T and Video-Swin-T (backbone issue), each in the ``default`` and
``release`` configurations.
"""

from __future__ import annotations

import pytest
import torch

from tools.fixture import build_fixture_model, compare_tree, run_fixture

CASES = {
    f"{backbone}_{config}_seed0": f"keys_{backbone}{'_release' if config == 'release' else ''}.tsv"
    for backbone in ("resnet50", "swin_t_p4w7", "video_swin_t_p4w7")
    for config in ("default", "release")
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, shared_reference):
    name = request.param
    model_dir = shared_reference / "model"
    fixture = torch.load(model_dir / "fixtures" / f"{name}.pt", map_location="cpu", weights_only=False)
    intermediates = torch.load(model_dir / "fixtures" / f"{name}.intermediates.pt", map_location="cpu",
                               weights_only=False)["intermediates"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = build_fixture_model(fixture, model_dir / CASES[name])
        ours = run_fixture(fixture, model)
    finally:
        torch.set_num_threads(threads)
    del model
    return fixture, intermediates, ours


def _close(a, b, atol, rtol=0.0):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a.float() - b.float()).abs()
    bound = atol + rtol * b.float().abs()
    assert bool((diff <= bound).all()), f"max abs diff {diff.max().item():.3g}"


def test_outputs_match(case):
    fixture, _, ours = case
    ref, out = fixture["outputs"], ours["outputs"]
    levels = [(out, ref)] + list(zip(out["aux_outputs"], ref["aux_outputs"]))
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 3
    for o, r in levels:
        _close(o["pred_logits"], r["pred_logits"], 1e-4)
        _close(o["pred_boxes"], r["pred_boxes"], 1e-4)
        _close(o["pred_masks"], r["pred_masks"], 1e-3, 1e-4)
    _close(out["reference_points"], ref["reference_points"], 1e-4)


def test_postprocess_matches(case):
    fixture, _, ours = case
    ref, out = fixture["postprocess"], ours["postprocess"]
    assert out["selected_query"] == ref["selected_query"]
    _close(out["query_scores"], ref["query_scores"], 1e-4)
    _close(out["selected_logits"], ref["selected_logits"], 1e-4)
    _close(out["selected_boxes"], ref["selected_boxes"], 1e-4)
    _close(out["selected_ref_points"], ref["selected_ref_points"], 1e-4)
    _close(out["mask_logits_orig_size"], ref["mask_logits_orig_size"], 1e-3, 1e-4)
    assert out["masks_orig_size"].dtype == torch.bool
    differ = out["masks_orig_size"] != ref["masks_orig_size"]
    near_zero = ref["mask_logits_orig_size"].abs() < 1e-3
    assert not bool((differ & ~near_zero).any())


def test_intermediates_match(case):
    """The debug comparison helper finds every recorded stage close to the original's."""
    _, intermediates, ours = case
    rows = compare_tree(ours["intermediates"], intermediates, "intermediates")
    assert len(rows) >= 20
    bad = [(name, diff, note) for name, diff, note in rows if not diff <= 1e-3]
    assert not bad, bad
