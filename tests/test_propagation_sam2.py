"""SAM 2's video predictor as a propagation back end (optional extra ``referformer[sam2]``).

The wiring is tested with a randomly initialised SAM 2 built from its own tiny config (at a 128-pixel
input so that it runs in seconds on a CPU): shapes, both directions, several objects, the given
frame exact, SAM 2's per-frame state dropped as the pass moves on. Not its accuracy (no weights here).
Skipped, with the reason, where the ``sam2`` package is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from propagation_toys import BLUE, RED, colour_mask, draw

from referformer.errors import UserError
from referformer.inference.propagation import FramePrompt, propagate
from referformer.inference.propagation_sam2 import SAM2_INSTALL_HINT, Sam2Propagator, load_sam2, sam2_import_error

_MISSING = sam2_import_error()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"sam2 is not installed ({_MISSING}): {SAM2_INSTALL_HINT}")
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def backend() -> Sam2Propagator:
    torch.manual_seed(0)
    return load_sam2(CONFIG, "cpu", allow_random=True, overrides=["++model.image_size=128"])


def test_random_sam2_propagates_several_objects_both_ways(backend: Sam2Propagator) -> None:
    frames = draw(32, 48, [[(RED, 2 + 3 * t, 4, 8), (BLUE, 30, 20, 8)] for t in range(5)])
    red, blue = colour_mask(frames[2], RED), colour_mask(frames[2], BLUE)
    result = propagate(backend, list(frames), [FramePrompt(2, {1: red, 2: blue})], window=2)
    assert result.probs.shape == (5, 2, 32, 48) and result.labels.shape == (5, 32, 48)
    assert result.probs.min() >= 0 and result.probs.max() <= 1
    assert result.direction.tolist() == [[-1, -1], [-1, -1], [0, 0], [1, 1], [1, 1]]
    assert np.array_equal(result.masks(1)[2], red) and np.array_equal(result.masks(2)[2], blue)
    assert set(np.unique(result.labels)) <= {0, 1, 2}


def test_state_older_than_what_sam2_reads_is_dropped(backend: Sam2Propagator) -> None:
    keep = backend.keep
    assert keep == max(backend.predictor.num_maskmem, backend.predictor.max_obj_ptrs_in_encoder) + 1
    state = {"output_dict_per_obj": {0: {"cond_frame_outputs": {0: "given"},
                                         "non_cond_frame_outputs": {t: t for t in range(1, 40)}}},
             "frames_tracked_per_obj": {0: {t: {} for t in range(40)}}}
    backend._prune(state, 39, reverse=False)
    assert sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]) == list(range(39 - keep, 40))
    assert state["output_dict_per_obj"][0]["cond_frame_outputs"] == {0: "given"}  # given frames stay
    assert min(state["frames_tracked_per_obj"][0]) == 39 - keep


def test_specs_without_weights_are_refused(tmp_path) -> None:
    with pytest.raises(UserError, match="names no checkpoint"):
        load_sam2(CONFIG, "cpu")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_sam2(f"{CONFIG}:{tmp_path / 'missing.pt'}", "cpu")
