"""Training clips of a Ref-YouTube-VOS-style dataset (Ref-YouTube-VOS, Ref-DAVIS17, MeViS).

One sample per ``(video, expression, start)`` with ``start in range(0, L, T)`` (the original
``prepare_metas``); ``__getitem__`` samples T frames around ``start`` (:mod:`sampling`), reads
frames and masks, builds the target and applies the transforms. How a mask is read is the only
dataset-specific part: a callable ``mask_reader(video, frame_position, expression) -> bool [H, W]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from referformer.data.base import RedrawDataset, VideoExpression, make_target
from referformer.data.io import read_rgb
from referformer.data.sampling import clip_starts, sample_train_clip

__all__ = ["ClipExpression", "VideoClipDataset"]


@dataclass(frozen=True)
class ClipExpression:
    """A training expression: the evaluation record plus its category label."""

    expression: VideoExpression
    label: int


MaskReader = Callable[[ClipExpression, int], np.ndarray]


class VideoClipDataset(RedrawDataset):
    """T-frame training clips; see the module docstring.

    Item = ``(frames, target)``: frames float32 ``[T, 3, H, W]``; target keys ``frames_idx``
    int64 ``[T]`` (positions in the sorted frame list), ``labels`` int64 ``[T]``, ``boxes``
    float32 ``[T, 4]`` (normalised cxcywh after the transforms), ``masks`` bool ``[T, H, W]``,
    ``valid`` ``[T]``, ``caption``, ``orig_size``, ``size``, ``video_id``, ``exp_id``,
    ``frame_names`` (the T frame stems) and ``dataset_name``.
    """

    def __init__(
        self,
        expressions: Sequence[ClipExpression],
        mask_reader: MaskReader,
        transforms: Callable | None,
        num_frames: int = 5,
        local_sampling_single_frame: bool = False,
        dataset_name: str = "ytvos",
    ) -> None:
        self.expressions = list(expressions)
        self.mask_reader = mask_reader
        self.transforms = transforms
        self.num_frames = num_frames
        self.local_sampling_single_frame = local_sampling_single_frame
        self.dataset_name = dataset_name
        self.metas: list[tuple[int, int]] = [
            (k, start)
            for k, ce in enumerate(self.expressions)
            for start in clip_starts(len(ce.expression.frame_names), num_frames)
        ]

    def __len__(self) -> int:
        return len(self.metas)

    def sample_frames(self, index: int) -> list[int]:
        """Frame positions of sample ``index`` (the first T of the original sorted sample)."""
        k, start = self.metas[index]
        length = len(self.expressions[k].expression.frame_names)
        local = self.num_frames != 1 or self.local_sampling_single_frame
        return sample_train_clip(start, length, self.num_frames, random, local=local)[: self.num_frames]

    def read_clip(self, index: int, positions: Sequence[int]) -> tuple[list, dict]:
        """Untransformed frames (PIL) and target (xyxy pixel boxes) of the given positions."""
        k, _ = self.metas[index]
        ce = self.expressions[k]
        e = ce.expression
        frames_by_pos = {p: read_rgb(e.frame_paths[p]) for p in dict.fromkeys(positions)}
        masks_by_pos = {p: self.mask_reader(ce, p) for p in frames_by_pos}
        frames = [frames_by_pos[p] for p in positions]
        masks = np.stack([masks_by_pos[p] for p in positions])
        target = make_target(
            masks, [ce.label] * len(positions), e.caption, frames[0].size,
            frames_idx=torch.as_tensor(list(positions), dtype=torch.int64),
            video_id=e.video_id, exp_id=e.exp_id,
            frame_names=[e.frame_names[p] for p in positions],
            dataset_name=self.dataset_name,
        )
        return frames, target

    def load(self, index: int):
        frames, target = self.read_clip(index, self.sample_frames(index))
        if self.transforms is not None:
            return self.transforms(frames, target)
        return frames, target


def check_frame_paths(paths: Sequence[Path], where: str) -> None:
    """Raise DatasetFormatError if the first frame of a video is missing (cheap sanity check)."""
    from referformer.errors import DatasetFormatError

    if paths and not Path(paths[0]).is_file():
        raise DatasetFormatError(f"{paths[0]}: frame listed in {where} not found")
