"""MeViS (MEVIS.md): several objects per sentence; the target is the union of their masks.

Layout under ``root``: ``<split>/JPEGImages/<video>/<frame>.jpg``, ``<split>/meta_expressions.json``
and, for ``train`` and ``valid_u``, ``<split>/mask_dict.json`` (``{anno_id: [RLE or null per
frame]}``, aligned with the sorted ``frames`` list by position).

* ``train`` (and ``valid_u`` with ``mode="clips"``): ReferFormer training clips exactly as the
  official ``ReferFormer_dataset.py`` (same sampling as Ref-YouTube-VOS); ``masks`` ``[T, H, W]`` =
  logical OR of the referred objects (the official code sums and later binarises: same result),
  one box around the union, label 0.
* ``valid_u`` / ``valid`` (``mode="eval"``): one item per expression with every frame;
  ``gt_masks()`` decodes the union for ``valid_u``.

``mask_dict.json`` is read lazily, once per process (DataLoader worker), on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from referformer.data.base import ExpressionVideoDataset, VideoExpression
from referformer.data.io import decode_rle, read_json, require_dir, require_file
from referformer.data.video_clips import ClipExpression, VideoClipDataset
from referformer.data.ytvos import read_expressions
from referformer.errors import DatasetFormatError, UserError

__all__ = ["MaskDict", "build_mevis", "MEVIS_SPLITS"]

MEVIS_SPLITS = ("train", "valid_u", "valid")


class MaskDict:
    """Lazy view of ``mask_dict.json``: :meth:`union` decodes an expression's target at a frame."""

    def __init__(self, path: Path) -> None:
        self.path = require_file(path, "{anno_id: [RLE or null, one per frame]}")
        self._data: dict | None = None

    def __getstate__(self) -> dict:  # do not ship the decoded json to DataLoader workers
        return {"path": self.path, "_data": None}

    @property
    def data(self) -> dict:
        if self._data is None:
            data = read_json(self.path, "{anno_id: [RLE or null, one per frame]}")
            if not isinstance(data, dict):
                raise DatasetFormatError(f"{self.path}: expected an object keyed by anno_id")
            self._data = data
        return self._data

    def union(self, e: VideoExpression, position: int, shape_hw: tuple[int, int] | None = None) -> np.ndarray:
        """bool ``[H, W]``: OR of the referred objects' masks at frame ``position`` (empty if all null)."""
        out = None
        for anno in e.anno_ids:
            track = self.data.get(str(anno))
            if track is None:
                raise DatasetFormatError(f"{self.path}: no anno_id {anno!r} (expression {e.video_id}/{e.exp_id})")
            if len(track) != len(e.frame_names):
                raise DatasetFormatError(f"{self.path}: anno_id {anno} has {len(track)} entries, video "
                                         f"{e.video_id} has {len(e.frame_names)} frames")
            rle = track[position]
            if rle is None:
                continue
            m = decode_rle(rle, f"{self.path} anno_id {anno} frame {position}") > 0
            out = m if out is None else (out | m)
        if out is None:
            if shape_hw is None:
                shape_hw = self._any_size(e)
            out = np.zeros(shape_hw, dtype=bool)
        return out

    def _any_size(self, e: VideoExpression) -> tuple[int, int]:
        for anno in e.anno_ids:
            for rle in self.data.get(str(anno), []):
                if rle is not None:
                    return int(rle["size"][0]), int(rle["size"][1])
        from referformer.data.io import read_rgb
        w, h = read_rgb(e.frame_paths[0]).size
        return h, w


class MeViSMaskReader:
    """Union target of a clip expression at a frame position (picklable mask reader)."""

    def __init__(self, masks: MaskDict) -> None:
        self.masks = masks

    def __call__(self, ce: ClipExpression, position: int) -> np.ndarray:
        return self.masks.union(ce.expression, position)

    def video(self, e: VideoExpression) -> np.ndarray:
        """bool ``[L, H, W]`` union over every frame of the expression's video."""
        return np.stack([self.masks.union(e, t) for t in range(len(e.frame_names))])


def build_mevis(
    root: Path,
    split: str = "train",
    transforms: Callable | None = None,
    num_frames: int = 5,
    mode: str | None = None,
    resize: int | None = 360,
) -> VideoClipDataset | ExpressionVideoDataset:
    """MeViS ``train`` / ``valid_u`` / ``valid``; see the module docstring."""
    if split not in MEVIS_SPLITS:
        raise UserError(f"unknown MeViS split {split!r}; choose one of {MEVIS_SPLITS}")
    root = require_dir(root, "the MeViS root (train/, valid_u/, valid/)")
    split_dir = require_dir(root / split, f"the MeViS {split} folder (JPEGImages/, meta_expressions.json)")
    exps = read_expressions(split_dir / "meta_expressions.json", split_dir / "JPEGImages")
    mode = mode or ("clips" if split == "train" else "eval")
    has_masks = split != "valid"
    if mode == "clips":
        if not has_masks:
            raise UserError("MeViS 'valid' has no masks: use mode='eval'")
        for e in exps:
            if not e.anno_ids:
                raise DatasetFormatError(f"{split_dir / 'meta_expressions.json'}: expression {e.video_id}/"
                                         f"{e.exp_id} has no 'anno_id'")
        reader = MeViSMaskReader(MaskDict(split_dir / "mask_dict.json"))
        return VideoClipDataset([ClipExpression(e, 0) for e in exps], reader, transforms, num_frames,
                                local_sampling_single_frame=False, dataset_name="mevis")
    if mode == "eval":
        loader = MeViSMaskReader(MaskDict(split_dir / "mask_dict.json")).video if has_masks else None
        return ExpressionVideoDataset(exps, "mevis", resize, mask_loader=loader)
    raise UserError(f"unknown mode {mode!r}; choose 'clips' or 'eval'")
