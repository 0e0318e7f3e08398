"""Pieces shared by every dataset: boxes from masks, target assembly, the redraw loop, and the
evaluation-side description of one (video, expression).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from referformer.data.io import read_rgb
from referformer.data.transforms import ToNormalizedTensor, resize_shorter_side

__all__ = ["mask_box", "make_target", "VideoExpression", "RedrawDataset", "ExpressionVideoDataset"]

MAX_REDRAWS = 1000


def mask_box(mask: np.ndarray) -> tuple[list[float], int]:
    """Inclusive pixel extents ``[x1, y1, x2, y2]`` of a 2-D mask and its visibility flag.

    ``x1 = min col, x2 = max col`` (no +1), as the original ``bounding_box``; an empty mask gives
    ``[0, 0, 0, 0]`` and ``valid = 0``.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0], 0
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])], 1


def make_target(
    masks: np.ndarray,
    labels: Sequence[int],
    caption: str,
    image_wh: tuple[int, int],
    **extra: Any,
) -> dict:
    """Assemble the pre-transform target of N masks (N = T for video samples, 1 for A2D/JHMDB).

    masks bool ``[N, H, W]``; boxes float32 ``[N, 4]`` xyxy pixels clamped to ``[0, w] x [0, h]``;
    valid int64 ``[N]``; labels int64 ``[N]``; ``orig_size`` = ``size`` = ``[h, w]``.
    """
    w, h = image_wh
    boxes, valid = zip(*(mask_box(m) for m in masks)) if len(masks) else ((), ())
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    boxes_t[:, 0::2].clamp_(min=0, max=w)
    boxes_t[:, 1::2].clamp_(min=0, max=h)
    target = {
        "labels": torch.as_tensor(list(labels), dtype=torch.int64),
        "boxes": boxes_t,
        "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)),
        "valid": torch.tensor(valid, dtype=torch.int64),
        "caption": caption,
        "orig_size": torch.as_tensor([int(h), int(w)]),
        "size": torch.as_tensor([int(h), int(w)]),
    }
    target.update(extra)
    return target


@dataclass(frozen=True)
class VideoExpression:
    """One sentence of one video, as evaluation needs it (no frames loaded).

    ``frame_names`` is the video's full sorted frame list (file stems); ``frame_paths`` the
    matching image files; ``obj_ids`` the referred object ids (strings as stored; several for
    MeViS, empty where the split has none).
    """

    video_id: str
    exp_id: str
    caption: str
    raw_caption: str
    frame_names: tuple[str, ...]
    frame_paths: tuple[Path, ...]
    obj_ids: tuple[str, ...] = field(default=())
    anno_ids: tuple[str, ...] = field(default=())


class RedrawDataset(Dataset):
    """Base class: ``__getitem__`` redraws a random index while the sample has no valid frame.

    Subclasses implement ``load(index) -> (frames, target)`` (already transformed). Like the
    original, a sample whose transformed clip has no visible target is replaced by
    ``random.randint(0, len - 1)``; set ``redraw_invalid = False`` (evaluation) to return it as is.
    """

    redraw_invalid: bool = True

    def load(self, index: int) -> tuple[torch.Tensor, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        for _ in range(MAX_REDRAWS):
            frames, target = self.load(index)
            if not self.redraw_invalid or bool(torch.any(target["valid"] == 1)):
                return frames, target
            index = random.randint(0, len(self) - 1)
        raise RuntimeError(
            f"{type(self).__name__}: no sample with a visible target after {MAX_REDRAWS} redraws; "
            "check the annotations of this dataset"
        )


class ExpressionVideoDataset(Dataset):
    """Evaluation view of a video dataset: one item per (video, expression), every frame.

    Item = ``(frames, info)``: frames float32 ``[L, 3, H', W']`` (all L frames of the video, in
    order, shorter side resized to ``resize`` like ``inference_ytvos.py``; ``resize=None`` keeps
    the original size), ImageNet-normalised; info dict with ``video_id``, ``exp_id``, ``caption``,
    ``frame_names`` (list[str]), ``orig_size`` / ``size`` int64 ``[2]`` = ``[h, w]``,
    ``obj_ids``, ``anno_ids`` and ``dataset_name``.
    Use :attr:`expressions` (or iterate :meth:`iter_expressions`) to walk them without loading.
    """

    def __init__(self, expressions: Sequence[VideoExpression], dataset_name: str, resize: int | None = 360,
                 mask_loader: Callable[[VideoExpression], np.ndarray] | None = None) -> None:
        self.expressions = list(expressions)
        self.dataset_name = dataset_name
        self.resize = resize
        self._mask_loader = mask_loader
        self._to_tensor = ToNormalizedTensor()

    def __len__(self) -> int:
        return len(self.expressions)

    def iter_expressions(self):
        """Yield every :class:`VideoExpression` in order (videos, then their expressions)."""
        yield from self.expressions

    def videos(self) -> dict[str, list[VideoExpression]]:
        """Expressions grouped by video id, in order (encode each video once, decode per sentence)."""
        grouped: dict[str, list[VideoExpression]] = {}
        for e in self.expressions:
            grouped.setdefault(e.video_id, []).append(e)
        return grouped

    def gt_masks(self, expression: VideoExpression) -> np.ndarray:
        """Ground-truth bool ``[L, H, W]`` of an expression (splits with annotations only)."""
        if self._mask_loader is None:
            raise ValueError(f"{self.dataset_name}: this split has no ground-truth masks")
        return self._mask_loader(expression)

    def load_frames(self, expression: VideoExpression) -> list[Image.Image]:
        """The RGB frames of the expression's video, in order, at their original size."""
        return [read_rgb(p) for p in expression.frame_paths]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        e = self.expressions[index]
        frames = self.load_frames(e)
        w, h = frames[0].size
        if self.resize is not None:
            frames = resize_shorter_side(frames, self.resize)
        clip, _ = self._to_tensor(frames, {})
        info = {
            "video_id": e.video_id,
            "exp_id": e.exp_id,
            "caption": e.caption,
            "frame_names": list(e.frame_names),
            "orig_size": torch.as_tensor([h, w]),
            "size": torch.as_tensor(list(clip.shape[-2:])),
            "obj_ids": list(e.obj_ids),
            "anno_ids": list(e.anno_ids),
            "dataset_name": self.dataset_name,
        }
        return clip, info
