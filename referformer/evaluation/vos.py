"""The semi-supervised video object segmentation protocol: which masks are given, which frames count.

* **DAVIS-2017** (``davis``), as ``davis2017-evaluation`` with ``--task semi-supervised``: the
  objects are ids ``1 .. max(frame 0)`` of the ground truth and their first-frame masks are given;
  each object is scored on frames ``1 .. T - 2`` (the first and the last frame are left out, as
  the official ``all_gt_masks[:, 1:-1]``), without void; J and F per frame are
  :mod:`referformer.evaluation.measures`' (equal to the official toolkit's), and the statistics
  (mean, recall, decay) and the global ``J&F-Mean`` those of :mod:`referformer.evaluation.davis`.
* **YouTube-VOS layouts** (``ytvos``, ``synthetic``; our offline protocol: the official YouTube-VOS
  score comes from its server): an object's mask is given at the first annotated frame where it
  appears (objects may enter later, as in YouTube-VOS), and it is scored on every later annotated
  frame, frames where it is absent included (an empty prediction there scores 1). Same J, F and
  statistics as DAVIS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from referformer.evaluation.davis import VOID_ID, ObjectScore, object_statistics

__all__ = ["VOSObject", "first_appearances", "object_score", "protocol_objects", "scored_frames"]


@dataclass(frozen=True)
class VOSObject:
    """An object of a video under the protocol: ``object_id`` and ``given`` (position of the frame
    whose ground-truth mask is given)."""

    object_id: int
    given: int


def first_appearances(label_maps: dict[int, np.ndarray]) -> dict[int, int]:
    """``{object id: first position where it appears}`` over annotated frames ``{position: labels}``."""
    first: dict[int, int] = {}
    for position in sorted(label_maps):
        for value in np.unique(label_maps[position]):
            if 0 < int(value) < VOID_ID:
                first.setdefault(int(value), position)
    return first


def protocol_objects(dataset: str, label_maps: dict[int, np.ndarray]) -> list[VOSObject]:
    """The objects of a video and where each is given (see the module docstring); ``label_maps``:
    the ground truth of the annotated frames ``{position: uint8 [H, W]}``."""
    if dataset == "davis":
        first = label_maps.get(0)
        if first is None:
            return []
        ids = first[first != VOID_ID]
        return [VOSObject(k, 0) for k in range(1, int(ids.max()) + 1 if ids.size else 1)]
    return [VOSObject(o, t) for o, t in sorted(first_appearances(label_maps).items())]


def scored_frames(dataset: str, obj: VOSObject, annotated: list[int], num_frames: int) -> list[int]:
    """Positions at which ``obj`` is scored (ascending)."""
    if dataset == "davis":
        return [t for t in annotated if 1 <= t <= num_frames - 2]
    return [t for t in annotated if t > obj.given]


def object_score(sequence: str, obj: VOSObject, j: list[float], f: list[float]) -> ObjectScore:
    """An :class:`ObjectScore` (``<sequence>_<id>``) from per-frame J and F over the scored frames."""
    j_arr, f_arr = np.asarray(j, dtype=np.float64), np.asarray(f, dtype=np.float64)
    return ObjectScore(f"{sequence}_{obj.object_id}", sequence, obj.object_id, obj.object_id, j_arr, f_arr,
                       object_statistics(j_arr), object_statistics(f_arr))
