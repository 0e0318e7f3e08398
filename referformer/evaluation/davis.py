"""The DAVIS-2017 unsupervised-task protocol: statistics, matching and folders of index PNGs.

Numerically equal to ``davis2017-evaluation`` (``utils.db_statistics``,
``evaluation._evaluate_unsupervised``) as driven by ReferFormer's ``eval_davis.py``; see
``../shared/reference/METRICS.md`` and ``docs/evaluation.md``. The per-frame J and F are
:mod:`referformer.evaluation.measures`'s.

Written by hand: the decay bins, the Hungarian matching of predicted to ground-truth objects and
the void handling. Speed without changing a bit of the result: J of every (prediction, GT object)
pair comes from one joint histogram per frame, and the boundaries are computed on the bounding box
of the frame's objects.

Conventions: label maps are integer ``[T, H, W]`` arrays (0 background, k = object k, 255 = void in
DAVIS ground truth).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from referformer.errors import DatasetFormatError
from referformer.evaluation.measures import BOUND_TH, boundary_counts, boundary_radius, disk, f_from_counts

MAX_PROPOSALS = 20  # unsupervised task: more predicted ids than this is an error (original exits)
VOID_ID = 255  # DAVIS ground truth: pixels that count for neither J nor F


# ---------------------------------------------------------------------------------------------
# statistics over the frames of one object
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectStatistics:
    """``db_statistics`` of one object's per-frame values: mean, recall (> 0.5) and decay."""

    mean: float
    recall: float
    decay: float


def decay_bin_edges(num_frames: int) -> np.ndarray:
    """Edges of the 4 decay bins: ``round(linspace(1, N, 5) + 1e-10) - 1`` (numpy half-to-even).

    The original casts to uint8, which wraps past 255 (N > 256 frames): we keep int64, which is
    identical up to 256 frames and correct beyond (the original's decay is wrong there).
    """
    return (np.round(np.linspace(1, num_frames, 5) + 1e-10) - 1).astype(np.int64)


def object_statistics(values: np.ndarray) -> ObjectStatistics:
    """Mean, recall and decay of per-frame J or F values ``[T]`` (float64, NaN ignored)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = decay_bin_edges(len(values))
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return ObjectStatistics(float(mean), float(recall), float(decay))


# ---------------------------------------------------------------------------------------------
# unsupervised task: one sequence
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectScore:
    """Scores of one ground-truth object of a sequence and the prediction matched to it.

    ``name`` follows the original (``<sequence>_<k>``, k = position in the matched list, which the
    original orders by *prediction* id); ``gt_object`` / ``pred_object`` are the real ids.
    ``j`` / ``f`` are the per-frame values ``[T]``.
    """

    name: str
    sequence: str
    gt_object: int
    pred_object: int
    j: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)
    j_stats: ObjectStatistics
    f_stats: ObjectStatistics


def _pair_scores(
    gt: np.ndarray, pred: np.ndarray, num_gt: int, num_pred: int, bound_th: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of every (prediction, GT object) pair -> two float64 ``[P, G, T]``.

    ``gt`` / ``pred``: integer label maps ``[T, H, W]``; GT ids > ``num_gt`` count as background,
    ``VOID_ID`` pixels are void; predicted ids above ``num_gt`` and up to ``num_pred`` are kept.
    """
    num_frames = gt.shape[0]
    j_all = np.zeros((num_pred, num_gt, num_frames))
    f_all = np.zeros((num_pred, num_gt, num_frames))
    if num_pred == 0 or num_gt == 0:
        return j_all, f_all
    kernel = disk(boundary_radius(*gt.shape[-2:], bound_th))
    pred_ids = np.arange(1, num_pred + 1, dtype=pred.dtype)[:, None, None]
    gt_ids = np.arange(1, num_gt + 1, dtype=gt.dtype)[:, None, None]
    image_shape = gt.shape[-2:]
    for t in range(num_frames):
        gt_t, pred_t = gt[t], pred[t]  # pred ids never exceed num_pred (its maximum)
        void = gt_t == VOID_ID
        has_void = bool(void.any())
        if has_void or int(gt_t.max()) > num_gt:
            gt_t = np.where((gt_t <= num_gt) & ~void, gt_t, 0)
        # Work on the bounding box of every (non-void) object pixel, grown by one pixel: outside
        # it both label maps are background, which changes no count used below.
        foreground = (pred_t > 0) | (gt_t > 0)
        if has_void:
            foreground &= ~void
        rows = np.flatnonzero(foreground.any(axis=1))
        cols = np.flatnonzero(foreground.any(axis=0))
        if rows.size == 0:
            rows = cols = np.zeros(1, dtype=np.int64)
        y0, x0 = max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)
        y1, x1 = min(int(rows[-1]) + 2, image_shape[0]), min(int(cols[-1]) + 2, image_shape[1])
        gt_c, pred_c, void_c = gt_t[y0:y1, x0:x1], pred_t[y0:y1, x0:x1], void[y0:y1, x0:x1]
        # J from the joint histogram of (pred id, gt id) over non-void pixels (exact integers).
        joint = pred_c.astype(np.int32) * (num_gt + 1) + gt_c
        joint = joint[~void_c] if has_void else joint.ravel()
        joint = np.bincount(joint, minlength=(num_pred + 1) * (num_gt + 1)).reshape(
            num_pred + 1, num_gt + 1
        )
        inter = joint[1:, 1:]
        union = joint[1:, :].sum(axis=1)[:, None] + joint[:, 1:].sum(axis=0)[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            j = inter / union
        j[union == 0] = 1.0
        j_all[:, :, t] = j
        # F: both masks restricted to non-void pixels, then boundaries and dilations per object.
        pred_masks = pred_c[None] == pred_ids
        if has_void:
            pred_masks &= ~void_c
        gt_masks = gt_c[None] == gt_ids
        counts = boundary_counts(pred_masks, gt_masks, kernel, (y0, x0), image_shape)
        n_pred, n_gt, pred_match, gt_match = counts
        f_all[:, :, t] = f_from_counts(n_pred[:, None], n_gt[None, :], pred_match, gt_match)
    return j_all, f_all


def num_gt_objects(gt: np.ndarray) -> int:
    """GT objects of the unsupervised task: ``max`` id of frame 0 ignoring void (0 if empty)."""
    first = gt[0]
    first = first[first != VOID_ID]
    return int(first.max()) if first.size else 0


def evaluate_sequence(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    name: str = "sequence",
    bound_th: float = BOUND_TH,
    max_proposals: int = MAX_PROPOSALS,
) -> list[ObjectScore]:
    """Score one sequence as the DAVIS unsupervised task.

    Args:
        gt: integer label map ``[T, H, W]`` (0 background, k object k, 255 void). GT objects are
            ids ``1..max(frame 0)``; larger ids are ignored; an empty frame 0 gives no object.
        pred: integer label map ``[T, H, W]``; predicted objects are ids ``1..max(all frames)``.
        name: sequence name, used in object names and errors.

    Returns one :class:`ObjectScore` per GT object, in the original's order (matched pairs sorted
    by prediction id). Raises ``ValueError`` for more than ``max_proposals`` predicted ids (the
    original calls ``sys.exit()``) or mismatched shapes.
    """
    gt, pred = (np.asarray(x) for x in (gt, pred))
    gt, pred = (x.astype(np.uint8) if x.dtype == bool else x for x in (gt, pred))
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(
            f"sequence {name!r}: prediction shape {pred.shape} differs from ground truth {gt.shape}"
        )
    num_pred = int(pred.max()) if pred.size else 0
    if num_pred > max_proposals:
        raise ValueError(
            f"sequence {name!r}: the prediction holds object id {num_pred}, more than the "
            f"{max_proposals} proposals the DAVIS unsupervised task allows"
        )
    num_gt = num_gt_objects(gt)
    num_pred = max(num_pred, num_gt)  # missing predictions are empty masks
    j_all, f_all = _pair_scores(gt, pred, num_gt, num_pred, bound_th)
    pair_score = (np.mean(j_all, axis=2) + np.mean(f_all, axis=2)) / 2
    rows, cols = linear_sum_assignment(-pair_score)
    j_matched, f_matched = j_all[rows, cols, :], f_all[rows, cols, :]
    return [
        ObjectScore(
            name=f"{name}_{k + 1}",
            sequence=name,
            gt_object=int(cols[k]) + 1,
            pred_object=int(rows[k]) + 1,
            j=j_matched[k],
            f=f_matched[k],
            j_stats=object_statistics(j_matched[k]),
            f_stats=object_statistics(f_matched[k]),
        )
        for k in range(len(rows))
    ]


# ---------------------------------------------------------------------------------------------
# global numbers and folders
# ---------------------------------------------------------------------------------------------
@dataclass
class DavisResult:
    """Global DAVIS numbers (means over all objects of all sequences) and the per-object scores."""

    objects: list[ObjectScore]

    def global_metrics(self) -> dict[str, float]:
        """``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``,
        ``F-Decay``.

        NaN when there is no object at all (the original's ``np.mean([])``).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            jm = np.mean([o.j_stats.mean for o in self.objects])
            fm = np.mean([o.f_stats.mean for o in self.objects])
            return {
                "J&F-Mean": float((jm + fm) / 2.0),
                "J-Mean": float(jm),
                "J-Recall": float(np.mean([o.j_stats.recall for o in self.objects])),
                "J-Decay": float(np.mean([o.j_stats.decay for o in self.objects])),
                "F-Mean": float(fm),
                "F-Recall": float(np.mean([o.f_stats.recall for o in self.objects])),
                "F-Decay": float(np.mean([o.f_stats.decay for o in self.objects])),
            }

    def per_object(self) -> list[dict[str, object]]:
        """One dict per object: names, matched ids and its M / R / D for J and F."""
        return [
            {
                "name": o.name,
                "sequence": o.sequence,
                "gt_object": o.gt_object,
                "pred_object": o.pred_object,
                "J-Mean": o.j_stats.mean,
                "J-Recall": o.j_stats.recall,
                "J-Decay": o.j_stats.decay,
                "F-Mean": o.f_stats.mean,
                "F-Recall": o.f_stats.recall,
                "F-Decay": o.f_stats.decay,
            }
            for o in self.objects
        ]

    def to_dict(self) -> dict[str, object]:
        """The global metrics plus ``"per_object"``, ready for JSON."""
        return {**self.global_metrics(), "per_object": self.per_object()}


def read_index_png(path: Path) -> np.ndarray:
    """``np.array(Image.open(path))`` of an index PNG (palette 'P' or 'L') -> integer ``[H, W]``.

    Raises :class:`DatasetFormatError` for unreadable or multi-channel (RGB) files.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.array(image)
    except (OSError, ValueError) as err:
        raise DatasetFormatError(f"cannot read {path}: {err}") from err
    if array.ndim != 2:
        raise DatasetFormatError(
            f"{path} has {array.shape[-1]} channels; DAVIS masks must be single-channel index PNGs "
            "(palette 'P' or 'L') whose pixel values are object ids"
        )
    return array.astype(np.int64) if array.dtype == bool else array


def _sequence_frames(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.png"))


def load_sequence(gt_dir: Path, pred_dir: Path, sequence: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<dir>/<sequence>/<frame>.png`` of GT and prediction -> two integer ``[T, H, W]``.

    Frames are the GT's (sorted file names); each must exist in the prediction at the GT's size,
    with ids 0..20 (an 'L' 0/255 mask would read as id 255, which the original also rejects).
    """
    frames = _sequence_frames(gt_dir / sequence)
    pred_seq = pred_dir / sequence
    if not pred_seq.is_dir():
        raise DatasetFormatError(
            f"prediction folder {pred_seq} is missing; every ground-truth sequence needs "
            f"<pred>/{sequence}/<frame>.png"
        )
    gts, preds = [], []
    for frame in frames:
        gt_path, pred_path = gt_dir / sequence / f"{frame}.png", pred_seq / f"{frame}.png"
        if not pred_path.is_file():
            raise DatasetFormatError(
                f"prediction {pred_path} is missing: frame names must match the ground truth "
                f"({gt_dir / sequence})"
            )
        gt_frame, pred_frame = read_index_png(gt_path), read_index_png(pred_path)
        if gts and gt_frame.shape != gts[0].shape:
            raise DatasetFormatError(
                f"{gt_path} is {gt_frame.shape[1]}x{gt_frame.shape[0]}, other frames of "
                f"{sequence} are {gts[0].shape[1]}x{gts[0].shape[0]}"
            )
        if pred_frame.shape != gt_frame.shape:
            raise DatasetFormatError(
                f"prediction {pred_path} is {pred_frame.shape[1]}x{pred_frame.shape[0]} but the "
                f"ground truth is {gt_frame.shape[1]}x{gt_frame.shape[0]}; write results at the "
                "original frame size"
            )
        top = int(pred_frame.max())
        if top > MAX_PROPOSALS:
            hint = (
                " (it looks like a 0/255 mask PNG: write object k as pixel value k, e.g. a "
                "palette PNG with values 0..20)"
                if top == 255
                else ""
            )
            raise DatasetFormatError(
                f"prediction {pred_path} holds object id {top}; the DAVIS unsupervised task "
                f"allows ids 1..{MAX_PROPOSALS}{hint}"
            )
        gts.append(gt_frame)
        preds.append(pred_frame)
    return np.stack(gts), np.stack(preds)


def list_sequences(gt_dir: Path) -> list[str]:
    """Sorted names of the sub-folders of ``gt_dir`` that hold PNG frames."""
    return sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and any(p.glob("*.png")))


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    *,
    bound_th: float = BOUND_TH,
    progress: bool = True,
) -> DavisResult:
    """Score ``pred_dir/<seq>/<frame>.png`` against ``gt_dir/<seq>/<frame>.png`` (unsupervised).

    Every sequence of ``gt_dir`` (sorted) is scored; extra prediction folders / frames are ignored,
    like the original. Raises :class:`DatasetFormatError` naming any missing or malformed file.
    """
    from tqdm import tqdm

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DatasetFormatError(f"{what} folder {folder} does not exist")
    sequences = list_sequences(gt_dir)
    if not sequences:
        raise DatasetFormatError(
            f"no sequence found in {gt_dir}: expected <sequence>/<frame>.png index PNGs"
        )
    objects: list[ObjectScore] = []
    for sequence in tqdm(sequences, desc="DAVIS", unit="seq", disable=not progress):
        gt, pred = load_sequence(gt_dir, pred_dir, sequence)
        objects.extend(evaluate_sequence(gt, pred, name=sequence, bound_th=bound_th))
    return DavisResult(objects)
