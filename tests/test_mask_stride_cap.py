"""The mask-stride cap of the synthetic benchmark: the masks of a perfect stride-s prediction."""

from __future__ import annotations

import numpy as np
import pytest

from referformer.evaluation.measures import region_similarity
from referformer.synthetic import SceneConfig, generate_dataset
from referformer.evaluation.synthetic import ideal_stride_masks, mask_stride_cap


def test_grid_aligned_square_loses_one_pixel_per_corner():
    # An 8x8 square on whole 4x4 cells: coverage is 1 on 2x2 cells and 0 elsewhere. Bilinear
    # upsampling keeps every edge pixel (0.625 > 0.5, 0.875 * 0.625 > 0.5 next to a corner) but
    # not the corner pixels themselves (0.625 * 0.625 = 0.39), so J = 60 / 64.
    gt = np.zeros((1, 16, 16), dtype=bool)
    gt[0, 4:12, 4:12] = True
    ideal = ideal_stride_masks(gt, stride=4)
    assert not (ideal & ~gt).any()
    assert sorted(zip(*np.nonzero(gt[0] & ~ideal[0]))) == [(4, 4), (4, 11), (11, 4), (11, 11)]
    assert float(region_similarity(ideal, gt)[0]) == pytest.approx(60 / 64)


def test_object_under_half_a_cell_vanishes_and_stride_one_is_exact():
    gt = np.zeros((2, 8, 8), dtype=bool)
    gt[0, 1, 1] = True  # covers 1/16 of its cell
    gt[1, 2:6, 3:7] = True
    assert not ideal_stride_masks(gt[:1], stride=4).any()
    assert np.array_equal(ideal_stride_masks(gt, stride=1), gt)


def test_size_must_be_a_multiple_of_the_stride():
    with pytest.raises(ValueError, match="multiple of the stride 4"):
        ideal_stride_masks(np.zeros((1, 10, 16), dtype=bool), stride=4)


def test_cap_over_a_generated_split(tmp_path):
    generate_dataset(tmp_path, 5, 2, splits=("valid",), config=SceneConfig(num_frames=4), progress=False)
    exact = mask_stride_cap(tmp_path, "valid", stride=1)
    cap4 = mask_stride_cap(tmp_path, "valid", stride=4)
    cap8 = mask_stride_cap(tmp_path, "valid", stride=8)
    assert exact["J"] == exact["F"] == exact["J&F"] == 1.0
    assert exact["count"] == cap4["count"] >= 4
    assert 1.0 > cap4["J&F"] > cap8["J&F"] > 0.0
