"""MeViS valid_u evaluation against the expected numbers of the shared format-exact fixture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referformer.errors import DatasetFormatError
from referformer.evaluation.mevis import evaluate_mevis


@pytest.fixture(scope="module")
def mevis_fixture(shared_reference, tmp_path_factory) -> Path:
    """The MeViS fixture written by ../shared/reference/formats/make_mevis_fixture.py."""
    out = tmp_path_factory.mktemp("mevis")
    script = shared_reference / "formats" / "make_mevis_fixture.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(out)], check=True, capture_output=True
    )
    return out


@pytest.mark.parametrize("example", ["valid_u_pred_gt", "valid_u_pred_empty", "valid_u_pred_shift"])
def test_matches_fixture_expectations(mevis_fixture, example):
    expected = json.loads((mevis_fixture / "FIXTURES.json").read_text())["examples"][example]
    result = evaluate_mevis(
        mevis_fixture / "mevis" / "valid_u", mevis_fixture / "examples" / example, progress=False
    ).to_dict()
    for key in ("J", "F", "J&F"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12)
    got = {e["name"]: [e["J"], e["F"]] for e in result["per_expression"]}
    assert got.keys() == expected["per_expression"].keys()
    for name, (j, f) in expected["per_expression"].items():
        assert got[name] == pytest.approx([j, f], abs=1e-12)


def test_ground_truth_gives_one(mevis_fixture):
    result = evaluate_mevis(
        mevis_fixture / "mevis" / "valid_u",
        mevis_fixture / "examples" / "valid_u_pred_gt",
        progress=False,
    )
    assert result.global_metrics() == {"J&F": 1.0, "J": 1.0, "F": 1.0}


def test_missing_and_mis_sized_predictions_are_errors(mevis_fixture, tmp_path):
    valid_u = mevis_fixture / "mevis" / "valid_u"
    pred = tmp_path / "pred"
    shutil.copytree(mevis_fixture / "examples" / "valid_u_pred_shift", pred)
    video = sorted(p.name for p in pred.iterdir())[0]
    # a mis-sized PNG (the official script silently drops the expression)
    frame = sorted((pred / video / "0").glob("*.png"))[1]
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(frame)
    with pytest.raises(DatasetFormatError, match=f"{frame.name} is 48x32"):
        evaluate_mevis(valid_u, pred, progress=False)
    frame.unlink()
    with pytest.raises(DatasetFormatError, match=f"{frame.name} is missing"):
        evaluate_mevis(valid_u, pred, progress=False)
    shutil.rmtree(pred / video / "0")
    with pytest.raises(DatasetFormatError, match="expression 0"):
        evaluate_mevis(valid_u, pred, progress=False)
    shutil.rmtree(pred / video)
    with pytest.raises(DatasetFormatError, match=f"{video} is missing"):
        evaluate_mevis(valid_u, pred, progress=False)
    # the official behaviour on request: a missing video scores [0, 0] per expression
    result = evaluate_mevis(valid_u, pred, missing="zero", progress=False).to_dict()
    zeros = [e for e in result["per_expression"] if e["video"] == video]
    assert zeros and all(e["J"] == 0.0 and e["F"] == 0.0 for e in zeros)
