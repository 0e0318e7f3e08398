"""DAVIS-2017 per-frame measures: region similarity J and boundary F-measure.

Numerically equal to ``davis2017-evaluation``'s ``davis2017/metrics.py`` (``db_eval_iou``,
``db_eval_boundary``); see ``../shared/reference/METRICS.md`` and ``docs/evaluation.md``. They
serve the DAVIS protocol (:mod:`referformer.evaluation.davis`), MeViS
(:mod:`referformer.evaluation.mevis`) and the synthetic benchmark's scoring.

Written by hand (no library computes these exact definitions): the boundary map rule, the
tolerance radius and its disk, and the precision/recall special cases. Dilation uses
``cv2.dilate`` with the ``skimage.morphology.disk`` kernel built here, exactly like the original.
Speed without changing a bit of the result: boundaries and dilations are computed once per
object (not per pair), on the bounding box of each boundary (outside ``bbox + radius`` the
dilation is zero), and matches are counted at the sparse boundary pixels.

Conventions: masks are ``[..., H, W]`` arrays (any dtype; non-zero = foreground).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "BOUND_TH",
    "boundary_counts",
    "boundary_f_measure",
    "boundary_map",
    "boundary_radius",
    "disk",
    "f_from_counts",
    "region_similarity",
]

BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal (DAVIS default)


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> float:
    """Tolerance radius in pixels: ``bound_th`` if >= 1, else ``ceil(bound_th * diagonal)``.

    8 px at 480x854, 1 px at 64x96. Returned as the float the original uses to build the disk.
    """
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk(radius: float) -> np.ndarray:
    """``skimage.morphology.disk(radius)``: uint8 ``[2r+1, 2r+1]``, 1 where ``dy² + dx² <= r²``."""
    offsets = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(offsets, offsets)
    return np.array(dx**2 + dy**2 <= radius**2, dtype=np.uint8)


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """DAVIS ``_seg2bmap`` for ``[..., H, W]`` masks -> bool ``[..., H, W]`` boundary pixels.

    A pixel is on the boundary if it differs from its right, lower or lower-right neighbour; in the
    last row only the right one is compared, in the last column only the lower one, and the
    bottom-right pixel is never on the boundary (so a full-frame mask has an empty boundary).
    """
    seg = np.asarray(masks).astype(bool)
    out = np.zeros_like(seg)
    core = seg[..., :-1, :-1]
    out[..., :-1, :-1] = (
        (core != seg[..., :-1, 1:]) | (core != seg[..., 1:, :-1]) | (core != seg[..., 1:, 1:])
    )
    out[..., -1, :-1] = seg[..., -1, :-1] != seg[..., -1, 1:]
    out[..., :-1, -1] = seg[..., :-1, -1] != seg[..., 1:, -1]
    out[..., -1, -1] = False
    return out


def f_from_counts(
    n_pred: np.ndarray, n_gt: np.ndarray, pred_match: np.ndarray, gt_match: np.ndarray
) -> np.ndarray:
    """F-measure from boundary pixel counts (broadcasting), with the DAVIS special cases.

    ``n_pred = |B_pred|``, ``n_gt = |B_gt|``, ``pred_match = |B_pred ∧ dil(B_gt)|``,
    ``gt_match = |B_gt ∧ dil(B_pred)|``. Empty vs empty gives 1, one empty gives 0.
    """
    n_pred, n_gt, pred_match, gt_match = np.broadcast_arrays(n_pred, n_gt, pred_match, gt_match)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, pred_match / n_pred.astype(np.float64), 1.0)
        recall = np.where(n_gt > 0, gt_match / n_gt.astype(np.float64), 1.0)
        precision = np.where((n_pred > 0) & (n_gt == 0), 0.0, precision)
        recall = np.where((n_pred == 0) & (n_gt > 0), 0.0, recall)
        total = precision + recall
        f = np.where(total == 0, 0.0, 2 * precision * recall / total)
    return f.astype(np.float64)


@dataclass(frozen=True)
class _SparseBoundary:
    """Boundary pixels of one mask (absolute ``rows``/``cols``) and its dilation on a crop."""

    rows: np.ndarray
    cols: np.ndarray
    dilated: np.ndarray  # uint8 crop of the dilated boundary map
    top: int
    left: int

    def count_inside(self, rows: np.ndarray, cols: np.ndarray) -> int:
        """How many of the pixels ``(rows, cols)`` lie in this dilated boundary."""
        r, c = rows - self.top, cols - self.left
        height, width = self.dilated.shape
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        return int(np.count_nonzero(self.dilated[r[inside], c[inside]]))


def _sparse_boundary(
    mask: np.ndarray,
    kernel: np.ndarray,
    origin: tuple[int, int] = (0, 0),
    image_shape: tuple[int, int] | None = None,
) -> _SparseBoundary | None:
    """Boundary of one bool mask and its ``cv2.dilate`` by ``kernel``; None if it is empty.

    ``mask`` is the crop at ``origin`` (row, col) of an ``image_shape`` frame (default: the whole
    frame); the crop must reach the frame's last row/column or end with an empty row/column.
    Computed on crops: boundary pixels lie in the mask's bounding box grown by one pixel up/left
    (plus one zero row/column below/right, so the crop's last-row/column rule agrees with the
    full frame's), and the dilation reaches at most one kernel size beyond the boundary pixels.
    Returned coordinates are absolute (frame) coordinates.
    """
    height, width = mask.shape
    image_h, image_w = image_shape if image_shape is not None else mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, x0 = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    y1, x1 = min(rows[-1] + 2, height), min(cols[-1] + 2, width)
    b_rows, b_cols = np.nonzero(boundary_map(mask[y0:y1, x0:x1]))
    if b_rows.size == 0:  # e.g. a full-frame mask
        return None
    b_rows, b_cols = b_rows + (y0 + origin[0]), b_cols + (x0 + origin[1])
    pad = kernel.shape[0]
    top, left = max(int(b_rows.min()) - pad, 0), max(int(b_cols.min()) - pad, 0)
    bottom = min(int(b_rows.max()) + pad + 1, image_h)
    right = min(int(b_cols.max()) + pad + 1, image_w)
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    canvas[b_rows - top, b_cols - left] = 1
    return _SparseBoundary(b_rows, b_cols, cv2.dilate(canvas, kernel), top, left)


def boundary_counts(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    kernel: np.ndarray,
    origin: tuple[int, int] = (0, 0),
    image_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise boundary counts of ``[P, h, w]`` vs ``[G, h, w]`` bool masks (one frame, or one
    crop of it as in :func:`_sparse_boundary`).

    Returns ``n_pred [P]``, ``n_gt [G]``, ``pred_match [P, G]`` (``|B_pred ∧ dil(B_gt)|``) and
    ``gt_match [P, G]`` (``|B_gt ∧ dil(B_pred)|``), all exact integers.
    """
    pred_b = [_sparse_boundary(m, kernel, origin, image_shape) for m in pred_masks]
    gt_b = [_sparse_boundary(m, kernel, origin, image_shape) for m in gt_masks]
    n_pred = np.array([0 if b is None else b.rows.size for b in pred_b], dtype=np.int64)
    n_gt = np.array([0 if b is None else b.rows.size for b in gt_b], dtype=np.int64)
    pred_match = np.zeros((len(pred_b), len(gt_b)), dtype=np.int64)
    gt_match = np.zeros((len(pred_b), len(gt_b)), dtype=np.int64)
    for i, p in enumerate(pred_b):
        for j, g in enumerate(gt_b):
            if p is not None and g is not None:
                pred_match[i, j] = g.count_inside(p.rows, p.cols)
                gt_match[i, j] = p.count_inside(g.rows, g.cols)
    return n_pred, n_gt, pred_match, gt_match


def region_similarity(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None
) -> np.ndarray:
    """DAVIS ``db_eval_iou``: ``|P∧G∧¬V| / |(P∨G)∧¬V|`` per ``[..., H, W]`` mask (1 if union 0).

    Returns float64 ``[...]`` (a 0-d array for single ``[H, W]`` masks).
    """
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    keep = ~np.asarray(void).astype(bool) if void is not None else np.ones_like(pred)
    inter = np.sum(pred & gt & keep, axis=(-2, -1))
    union = np.sum((pred | gt) & keep, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.asarray(inter / union, dtype=np.float64)
    j[union == 0] = 1.0
    return j


def boundary_f_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> np.ndarray:
    """DAVIS ``db_eval_boundary``: boundary F of ``[T, H, W]`` (or ``[H, W]``) -> float64 ``[T]``.

    Both masks are multiplied by ``¬void`` first; tolerance from :func:`boundary_radius`.
    """
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
    if void is not None:
        keep = ~np.broadcast_to(np.asarray(void).astype(bool), pred.shape)
        pred, gt = pred & keep, gt & keep
    kernel = disk(boundary_radius(*pred.shape[-2:], bound_th))
    out = np.zeros(len(pred))
    for t in range(len(pred)):
        counts = boundary_counts(pred[t : t + 1], gt[t : t + 1], kernel)
        out[t] = f_from_counts(*counts)[0, 0]
    return out[0] if single else out
