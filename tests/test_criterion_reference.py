"""Our matcher + criterion against the ORIGINAL code's answers (../shared/reference/training/criterion).

Each ``case_NN.pt`` holds model outputs of 4 decoder layers, targets as the original datasets give
them (invisible frames with zero boxes, mixed input sizes, bool or float masks, 1 or 65 classes)
and what the unmodified original ``SetCriterion`` / ``HungarianMatcher`` returned: the 20
unweighted terms, the weighted total, the matched query of every clip and decoder layer and the
gap between the best and second-best matching cost. Every case found there is checked; the test
skips (with the reason) where ``../shared`` is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.ops import generalized_box_iou as detr_generalized_box_iou

from conftest import SHARED_REFERENCE
from referformer.engine.box_ops import box_cxcywh_to_xyxy
from referformer.engine.criterion import LossWeights, SetCriterion
from referformer.engine.matcher import HungarianMatcher, MatcherCosts

ATOL = RTOL = 1e-5  # the README's tolerance: 1e-5 absolute + 1e-5 relative
CASE_DIR = Path("training") / "criterion"
CASES = sorted(p.name for p in (SHARED_REFERENCE / CASE_DIR).glob("case_*.pt")) or ["(no case found)"]


def _load(shared_reference: Path, name: str) -> dict[str, Any]:
    path = shared_reference / CASE_DIR / name
    if not path.is_file():
        pytest.fail(f"no reference case in {shared_reference / CASE_DIR} (expected case_*.pt files)")
    return torch.load(path, weights_only=True)


def _criterion(params: dict[str, Any]) -> SetCriterion:
    """Our criterion configured as the original ``build()`` was (its ``params``)."""
    matcher = HungarianMatcher(MatcherCosts(
        cost_class=params["set_cost_class"], cost_bbox=params["set_cost_bbox"], cost_giou=params["set_cost_giou"],
        cost_mask=params["set_cost_mask"], cost_dice=params["set_cost_dice"]))
    weights = LossWeights(loss_ce=params["cls_loss_coef"], loss_bbox=params["bbox_loss_coef"],
                          loss_giou=params["giou_loss_coef"], loss_mask=params["mask_loss_coef"],
                          loss_dice=params["dice_loss_coef"])
    layers = int(params["dec_layers"]) if params["aux_loss"] else 1
    return SetCriterion(matcher, weights, num_decoder_layers=layers, focal_alpha=params["focal_alpha"])


def _layers(outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"last": ..., "aux0": ..., ...}`` as the case's ``indices`` name them."""
    layers = {"last": {k: v for k, v in outputs.items() if k != "aux_outputs"}}
    layers.update({f"aux{i}": aux for i, aux in enumerate(outputs.get("aux_outputs", []))})
    return layers


def _as_query_lists(indices: Any) -> list[list[int]]:
    """Matched queries per clip as plain int lists, from the case file or from our matcher."""
    out = []
    for entry in indices:
        if isinstance(entry, (tuple, list)) and len(entry) == 2 and torch.is_tensor(entry[0]):
            entry = entry[0]  # (query_index, target_index) of our matcher
        out.append([int(v) for v in torch.as_tensor(entry).reshape(-1).tolist()])
    return out


@pytest.mark.parametrize("case", CASES)
def test_terms_total_and_matches_equal_the_original(shared_reference, case):
    data = _load(shared_reference, case)
    official, outputs, targets = data["official"], data["outputs"], data["targets"]
    criterion = _criterion(official["params"])

    losses = criterion(outputs, targets)
    assert set(losses) == set(official["losses"])
    for name, expected in official["losses"].items():
        expected = float(expected)
        assert abs(losses[name].item() - expected) <= ATOL + RTOL * abs(expected), (
            f"{case} {name}: ours {losses[name].item():.8g}, original {expected:.8g}")
    assert criterion.weight_dict == {k: float(v) for k, v in official["weight_dict"].items()}
    total = float(official["total"])
    assert criterion.total(losses).item() == pytest.approx(total, abs=ATOL, rel=RTOL)

    # num_boxes: visible target frames of the batch, at least 1 (one process)
    visible = sum(int(t["valid"].sum()) for t in targets)
    assert criterion.num_boxes(targets, torch.device("cpu")).item() == max(visible, 1)

    # the matched query of every clip and decoder layer, and the matching costs themselves: the gap
    # between the best and the second-best query cost is a function of the cost values
    gaps = []
    for layer_name, layer in _layers(outputs).items():
        assert _as_query_lists(criterion.matcher(layer, targets)) == _as_query_lists(official["indices"][layer_name]), (
            f"{case} {layer_name}")
        for costs in criterion.matcher.cost_matrix(layer, targets):
            best, second = costs.flatten().sort().values[:2].tolist()
            gaps.append(second - best)
    assert min(gaps) == pytest.approx(float(official["min_cost_gap"]), abs=ATOL, rel=RTOL)


def test_cases_with_tiny_boxes_on_invisible_frames_tell_the_giou_formulas_apart(shared_reference):
    """Where invisible frames carry tiny predicted boxes, DETR's GIoU misses the original's loss_giou
    by far more than the tolerance: the comparison above really checks the epsilons."""
    checked = 0
    for case in CASES:
        data = _load(shared_reference, case)
        if not data["meta"].get("tiny_invisible") or all(bool(t["valid"].all()) for t in data["targets"]):
            continue  # no invisible frame with a tiny predicted box
        official, outputs, targets = data["official"], data["outputs"], data["targets"]
        criterion = _criterion(official["params"])
        layer = _layers(outputs)["last"]
        queries = [q[0] for q in _as_query_lists(criterion.matcher(layer, targets))]
        boxes = torch.cat([layer["pred_boxes"][b, :, q] for b, q in enumerate(queries)])  # [B*T, 4]
        target_boxes = torch.cat([t["boxes"] for t in targets])
        num_boxes = criterion.num_boxes(targets, torch.device("cpu"))
        detr = torch.diag(detr_generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes)))
        detr_loss = ((1 - detr).sum() / num_boxes).item()
        assert abs(detr_loss - float(official["losses"]["loss_giou"])) > 100 * (ATOL + RTOL), case
        checked += 1
    assert checked, "no reference case has tiny predicted boxes on invisible frames"
