"""DAVIS J / F / statistics / unsupervised matching against hand-computed answers and a literal
loop-form transcription of the original algorithm (METRICS.md)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment

from referformer.errors import DatasetFormatError
from referformer.evaluation import davis as D
from referformer.evaluation import measures as M


# --------------------------------------------------------------------------------------------
# literal transcription of the original per-frame code, used only as a cross-check
# --------------------------------------------------------------------------------------------
def _ref_seg2bmap(seg):
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _ref_f(fg, gt, void):
    void = void.astype(bool)
    r = np.ceil(0.008 * np.linalg.norm(fg.shape))
    fb = _ref_seg2bmap(fg * ~void)
    gb = _ref_seg2bmap(gt * ~void)
    ker = M.disk(r)
    fd, gd = cv2.dilate(fb.astype(np.uint8), ker), cv2.dilate(gb.astype(np.uint8), ker)
    n_fg, n_gt = np.sum(fb), np.sum(gb)
    if n_fg == 0 and n_gt > 0:
        p, rc = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1, 1
    else:
        p, rc = np.sum(fb * gd) / float(n_fg), np.sum(gb * fd) / float(n_gt)
    return 0 if p + rc == 0 else 2 * p * rc / (p + rc)


def _ref_stats(v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        m, o = np.nanmean(v), np.nanmean(v > 0.5)
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.uint8)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        return m, o, np.nanmean(bins[0]) - np.nanmean(bins[3])


def _ref_unsupervised(gt_labels, pred_labels):
    masks = gt_labels.astype(np.float64)
    void = masks == 255
    masks[void] = 0
    n_gt = int(masks[0].max())
    gt = masks[None] == np.arange(1, n_gt + 1)[:, None, None, None]
    n_res = int(pred_labels.max())
    res = pred_labels[None] == np.arange(1, n_res + 1)[:, None, None, None]
    if n_res < n_gt:
        res = np.concatenate([res, np.zeros((n_gt - n_res, *res.shape[1:]), bool)])
    T = gt_labels.shape[0]
    J = np.zeros((res.shape[0], n_gt, T))
    F = np.zeros_like(J)
    for ii in range(n_gt):
        for jj in range(res.shape[0]):
            inter = np.sum(res[jj] & gt[ii] & ~void, axis=(-2, -1))
            union = np.sum((res[jj] | gt[ii]) & ~void, axis=(-2, -1))
            with np.errstate(all="ignore"):
                j = inter / union
            j[np.isclose(union, 0)] = 1
            J[jj, ii] = j
            F[jj, ii] = [_ref_f(res[jj][t], gt[ii][t], void[t]) for t in range(T)]
    rows, cols = linear_sum_assignment(-((np.mean(J, axis=2) + np.mean(F, axis=2)) / 2))
    J, F = J[rows, cols], F[rows, cols]
    return [(_ref_stats(J[k]), _ref_stats(F[k])) for k in range(n_gt)]


# --------------------------------------------------------------------------------------------
# boundary map, radius, disk
# --------------------------------------------------------------------------------------------
def test_boundary_of_full_frame_mask_is_empty():
    assert not M.boundary_map(np.ones((5, 7), bool)).any()


@pytest.mark.parametrize("y, x", [(3, 4), (1, 1)])
def test_single_pixel_boundary_is_2x2_block_up_left(y, x):
    mask = np.zeros((6, 8), bool)
    mask[y, x] = True
    expected = np.zeros_like(mask)
    expected[y - 1 : y + 1, x - 1 : x + 1] = True
    np.testing.assert_array_equal(M.boundary_map(mask), expected)


def test_single_pixel_boundary_at_corners():
    mask = np.zeros((4, 5), bool)
    mask[0, 0] = True  # only itself: nothing above/left of it
    assert set(zip(*np.nonzero(M.boundary_map(mask)))) == {(0, 0)}
    mask = np.zeros((4, 5), bool)
    mask[3, 4] = True  # bottom-right pixel itself is never a boundary
    assert set(zip(*np.nonzero(M.boundary_map(mask)))) == {(3, 3), (2, 4), (2, 3)}


def test_boundary_last_row_and_column_rules():
    mask = np.zeros((3, 4), bool)
    mask[2, :2] = True  # last row: compared only with the right neighbour
    assert set(zip(*np.nonzero(M.boundary_map(mask)))) == {(1, 0), (1, 1), (2, 1)}
    mask = np.zeros((3, 4), bool)
    mask[:2, 3] = True  # last column: compared only with the pixel below
    assert set(zip(*np.nonzero(M.boundary_map(mask)))) == {(0, 2), (1, 2), (1, 3)}


def test_boundary_matches_transcription_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12)))) < 0.5
        np.testing.assert_array_equal(M.boundary_map(m), _ref_seg2bmap(m))


@pytest.mark.parametrize(
    "h, w, r",
    [(64, 96, 1), (240, 320, 4), (360, 640, 6), (480, 854, 8), (720, 1280, 12), (1080, 1920, 18)],
)
def test_tolerance_radius(h, w, r):
    assert M.boundary_radius(h, w) == r


def test_tolerance_radius_absolute_when_at_least_one():
    assert M.boundary_radius(480, 854, bound_th=3) == 3


def test_disk_shapes():
    np.testing.assert_array_equal(M.disk(0), [[1]])
    np.testing.assert_array_equal(M.disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    d2 = M.disk(2)
    assert d2.shape == (5, 5) and d2.sum() == 13 and d2[0, 0] == 0 and d2[0, 1] == 0
    d8 = M.disk(8)
    yy, xx = np.mgrid[-8:9, -8:9]
    np.testing.assert_array_equal(d8, (yy**2 + xx**2 <= 64).astype(np.uint8))


# --------------------------------------------------------------------------------------------
# precision / recall special cases, J and F on simple masks
# --------------------------------------------------------------------------------------------
def test_f_special_cases():
    f = M.f_from_counts(
        np.array([0, 0, 5, 4]),
        np.array([0, 3, 0, 4]),
        np.array([0, 0, 0, 0]),
        np.array([0, 0, 0, 0]),
    )
    np.testing.assert_array_equal(f, [1.0, 0.0, 0.0, 0.0])  # last: P = R = 0 -> F = 0
    assert (
        M.f_from_counts(np.array(4), np.array(8), np.array(2), np.array(6))[()]
        == 2 * 0.5 * 0.75 / 1.25
    )


def test_full_frame_vs_empty_gives_j0_f1():
    full, empty = np.ones((20, 30), bool), np.zeros((20, 30), bool)
    assert M.region_similarity(full, empty) == 0.0
    assert M.boundary_f_measure(full, empty) == 1.0


def test_empty_vs_empty_and_empty_vs_object():
    empty = np.zeros((20, 30), bool)
    obj = empty.copy()
    obj[5:9, 5:9] = True
    assert M.region_similarity(empty, empty) == 1.0 and M.boundary_f_measure(empty, empty) == 1.0
    assert M.region_similarity(empty, obj) == 0.0 and M.boundary_f_measure(empty, obj) == 0.0


def test_void_pixels_excluded_from_j_and_f():
    gt = np.zeros((20, 30), bool)
    gt[5:10, 5:10] = True
    pred = gt.copy()
    pred[5:10, 10:15] = True  # 25 extra pixels, all void
    void = np.zeros_like(gt)
    void[:, 10:] = True
    assert M.region_similarity(pred, gt, void) == 1.0
    assert M.boundary_f_measure(pred, gt, void) == 1.0
    assert M.region_similarity(pred, gt) == 0.5


def test_shifted_square_hand_computed():
    # 64x96 -> radius 1 (3x3 cross). GT 10x10 square, prediction shifted 2 px right.
    gt = np.zeros((64, 96), bool)
    gt[10:20, 10:20] = True
    pred = np.roll(gt, 2, axis=1)
    assert M.region_similarity(pred, gt) == pytest.approx(80 / 120, abs=0)
    # boundaries are the 11x11 outlines (40 px); 22 of each side lie within the cross of the other
    assert M.boundary_f_measure(pred, gt) == pytest.approx(0.55, abs=1e-15)


# --------------------------------------------------------------------------------------------
# statistics and decay bins
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, edges",
    [
        (1, [0, 0, 0, 0, 0]),
        (2, [0, 0, 1, 1, 1]),
        (3, [0, 1, 1, 2, 2]),
        (5, [0, 1, 2, 3, 4]),
        (104, [0, 26, 52, 77, 103]),
    ],
)
def test_decay_bin_edges(n, edges):
    np.testing.assert_array_equal(D.decay_bin_edges(n), edges)


def test_decay_values():
    assert D.object_statistics(np.array([0.7])).decay == 0.0
    assert D.object_statistics(np.array([0.9, 0.4])).decay == pytest.approx(0.5)
    v = np.array([1.0, 0.8, 0.6, 0.4, 0.2])
    assert D.object_statistics(v).decay == pytest.approx(0.9 - 0.3)
    v = np.linspace(1, 0, 104)
    assert D.object_statistics(v).decay == pytest.approx(v[:27].mean() - v[77:].mean())


def test_decay_beyond_256_frames_does_not_wrap():
    v = np.linspace(1, 0, 300)
    np.testing.assert_array_equal(D.decay_bin_edges(300), [0, 75, 150, 224, 299])
    assert D.object_statistics(v).decay == pytest.approx(v[:76].mean() - v[224:].mean())


def test_mean_and_recall_strictly_greater():
    s = D.object_statistics(np.array([0.5, 0.6, 1.0, 0.2]))
    assert s.mean == pytest.approx(0.575) and s.recall == 0.5


# --------------------------------------------------------------------------------------------
# unsupervised task
# --------------------------------------------------------------------------------------------
def _square(labels, t, k, y, x, size=6):
    labels[t, y : y + size, x : x + size] = k


def test_matching_swapped_ids_and_original_naming():
    gt = np.zeros((2, 40, 40), np.uint8)
    pred = np.zeros_like(gt)
    for t in range(2):
        _square(gt, t, 1, 2, 2)
        _square(gt, t, 2, 20, 20)
        _square(pred, t, 2, 2, 2)
        _square(pred, t, 1, 20, 20)
    objects = D.evaluate_sequence(gt, pred, name="seq")
    assert [o.name for o in objects] == ["seq_1", "seq_2"]
    # the original orders matched pairs by prediction id
    assert [(o.pred_object, o.gt_object) for o in objects] == [(1, 2), (2, 1)]
    assert all(o.j_stats.mean == 1.0 and o.f_stats.mean == 1.0 for o in objects)


def test_id_only_in_later_frames_is_ignored():
    gt = np.zeros((3, 30, 30), np.uint8)
    pred = np.zeros_like(gt)
    for t in range(3):
        _square(gt, t, 1, 2, 2)
        _square(pred, t, 1, 2, 2)
    _square(gt, 2, 2, 15, 15)  # id 2 appears only in frame 2: ignored (background)
    objects = D.evaluate_sequence(gt, pred, name="s")
    assert len(objects) == 1
    assert objects[0].j_stats.mean == 1.0 and objects[0].f_stats.mean == 1.0


def test_empty_first_frame_gives_no_object():
    gt = np.zeros((2, 20, 20), np.uint8)
    gt[1, 2:5, 2:5] = 1
    assert D.evaluate_sequence(gt, gt.copy(), name="s") == []
    assert np.isnan(D.DavisResult([]).global_metrics()["J-Mean"])


def test_fewer_predictions_than_gt_are_padded_with_empty_masks():
    gt = np.zeros((2, 30, 30), np.uint8)
    for t in range(2):
        _square(gt, t, 1, 2, 2)
        _square(gt, t, 2, 15, 15)
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)
    objects = D.evaluate_sequence(gt, pred, name="s")
    assert len(objects) == 2
    by_gt = {o.gt_object: o for o in objects}
    assert by_gt[1].j_stats.mean == 1.0 and by_gt[2].j_stats.mean == 0.0
    assert by_gt[2].f_stats.mean == 0.0 and by_gt[2].pred_object == 2


def test_void_in_gt_and_more_than_20_ids():
    gt = np.zeros((1, 20, 20), np.uint8)
    _square(gt, 0, 1, 2, 2)
    gt[0, 15:, 15:] = 255
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)
    pred[0, 15:, 15:] = 1  # predicted on void pixels only: no penalty
    (obj,) = D.evaluate_sequence(gt, pred, name="s")
    assert obj.j_stats.mean == 1.0 and obj.f_stats.mean == 1.0
    pred[0, 0, 0] = 21
    with pytest.raises(ValueError, match="'s'.*21"):
        D.evaluate_sequence(gt, pred, name="s")


def _random_labels(rng, T, H, W, n, void):
    out = np.zeros((T, H, W), np.uint8)
    yy, xx = np.ogrid[:H, :W]
    for t in range(T):
        for k in range(1, n + 1):
            if rng.random() < 0.15:
                continue
            cy, cx = rng.integers(0, H), rng.integers(0, W)
            ry, rx = rng.integers(1, H // 2 + 2), rng.integers(1, W // 2 + 2)
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            if rng.random() < 0.2:
                m = rng.random((H, W)) < 0.3
            out[t][m] = k
        if void and rng.random() < 0.5:
            out[t][rng.random((H, W)) < 0.02] = 255
        if rng.random() < 0.1:
            out[t][:] = 0
    return out


def test_sequence_scores_equal_literal_transcription_bitwise():
    rng = np.random.default_rng(7)
    for trial in range(25):
        T, H, W = int(rng.integers(1, 6)), int(rng.integers(1, 30)), int(rng.integers(1, 40))
        if trial % 8 == 0:
            H, W = int(rng.integers(80, 150)), int(rng.integers(80, 200))
        gt = _random_labels(rng, T, H, W, int(rng.integers(0, 4)), True)
        pred = _random_labels(rng, T, H, W, int(rng.integers(0, 5)), False)
        ref = _ref_unsupervised(gt, pred)
        ours = D.evaluate_sequence(gt, pred, name="s")
        assert len(ours) == len(ref)
        for o, (js, fs) in zip(ours, ref):
            got = (
                o.j_stats.mean,
                o.j_stats.recall,
                o.j_stats.decay,
                o.f_stats.mean,
                o.f_stats.recall,
                o.f_stats.decay,
            )
            assert got == tuple(float(x) for x in (*js, *fs))  # exact, not approximate


def test_global_means_weigh_every_object_equally():
    def o(m):
        return D.ObjectScore(
            "x",
            "x",
            1,
            1,
            np.zeros(1),
            np.zeros(1),
            D.ObjectStatistics(m, 1, 0),
            D.ObjectStatistics(m / 2, 0, 0),
        )

    g = D.DavisResult([o(1.0), o(0.5), o(0.0)]).global_metrics()
    assert g["J-Mean"] == 0.5 and g["F-Mean"] == 0.25 and g["J&F-Mean"] == 0.375


# --------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------
def _write_png(path, array):
    """Palette ('P') PNG whose pixel values are the ids, like DAVIS annotations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").convert("P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (256 * 3 - 9))
    image.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(np.array(Image.open(path)), array)


def write_davis_tree(root, sequences):
    for seq, frames in sequences.items():
        for t, frame in enumerate(frames):
            _write_png(root / seq / f"{t:05d}.png", frame)


def test_folder_ground_truth_as_prediction_scores_one(tmp_path):
    gt = np.zeros((3, 24, 32), np.uint8)
    for t in range(3):
        _square(gt, t, 1, 2 + t, 2)
        _square(gt, t, 2, 12, 12 + t)
    gt[:, 0, :] = 255
    write_davis_tree(tmp_path / "gt", {"a": gt, "b": gt[:, ::-1]})
    pred = np.where(gt == 255, 0, gt)
    write_davis_tree(tmp_path / "pred", {"a": pred, "b": pred[:, ::-1]})
    result = D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
    g = result.global_metrics()
    assert g["J&F-Mean"] == 1.0 and g["J-Recall"] == 1.0 and g["F-Decay"] == 0.0
    assert [o["name"] for o in result.per_object()] == ["a_1", "a_2", "b_1", "b_2"]


def test_folder_errors(tmp_path):
    gt = np.zeros((2, 10, 12), np.uint8)
    gt[:, 2:5, 2:5] = 1
    write_davis_tree(tmp_path / "gt", {"a": gt})
    with pytest.raises(DatasetFormatError, match="does not exist"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "nope", progress=False)
    (tmp_path / "pred").mkdir()
    with pytest.raises(DatasetFormatError, match="pred/a"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
    _write_png(tmp_path / "pred" / "a" / "00000.png", gt[0])
    with pytest.raises(DatasetFormatError, match="00001.png is missing"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
    Image.fromarray(gt[1] * 255).save(tmp_path / "pred" / "a" / "00001.png")  # 'L' 0/255
    with pytest.raises(DatasetFormatError, match="id 255.*0/255 mask"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
    _write_png(tmp_path / "pred" / "a" / "00001.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetFormatError, match="12x10"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "pred" / "a" / "00001.png")
    with pytest.raises(DatasetFormatError, match="3 channels"):
        D.evaluate_folders(tmp_path / "gt", tmp_path / "pred", progress=False)
