"""JHMDB-Sentences (DATASETS.md section 4), evaluation only.

Reads ``jhmdb_sentences_samples_metadata.json`` (MTTR-generated: ``[video_id, frame_path,
mask_path, video_total_frames, query]``, three sampled frames per sentence). Paths in it start with
``./jhmdb_sentences/``; they are resolved against ``root`` (the original joins them to a
hard-coded ``data/``, which only works from one working directory).

Sample = ``(frames, target)`` like A2D (``masks`` / ``boxes`` / ``valid`` of the centre frame only,
``valid_indices``; ``labels`` = 0, a key the original JHMDB target lacks); ``frames_idx`` holds **1-based** frame numbers, as the
original; ``image_id`` = ``v_<video>_f_<frame>``. No sample is ever redrawn.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Callable

import torch

from referformer.data.base import RedrawDataset, make_target
from referformer.data.captions import clean_caption
from referformer.data.io import read_jhmdb_mat, read_json, read_rgb, require_dir
from referformer.data.sampling import centered_window
from referformer.errors import DatasetFormatError, UserError

__all__ = ["JHMDBSentences", "jhmdb_image_id"]


def jhmdb_image_id(video_id: str, frame: int) -> str:
    """The id of a sample in ``jhmdb_sentences_gt_annotations_in_coco_format.json``."""
    return f"v_{video_id}_f_{frame}"


class JHMDBSentences(RedrawDataset):
    """JHMDB-Sentences evaluation samples (split ``test``, alias ``val``)."""

    redraw_invalid = False

    def __init__(self, root: Path, split: str = "test", transforms: Callable | None = None,
                 num_frames: int = 5) -> None:
        if split not in ("test", "val"):
            raise UserError(f"JHMDB-Sentences has only an evaluation split ('test'), not {split!r}")
        self.root = require_dir(root, "the JHMDB-Sentences root (Rename_Images/, puppet_mask/, *.json)")
        self.transforms = transforms
        self.num_frames = num_frames
        meta_path = self.root / "jhmdb_sentences_samples_metadata.json"
        samples = read_json(meta_path, "a list of [video_id, frame_path, mask_path, total_frames, query]")
        if not isinstance(samples, list) or any(not isinstance(s, list) or len(s) != 5 for s in samples):
            raise DatasetFormatError(f"{meta_path}: expected a list of [video_id, frame_path, mask_path, "
                                     "video_total_frames, query]")
        self.samples = [(str(v), self._resolve(f), self._resolve(m), int(n), str(q)) for v, f, m, n, q in samples]

    def _resolve(self, stored: str) -> Path:
        parts = PurePosixPath(stored).parts
        if "jhmdb_sentences" in parts:
            parts = parts[parts.index("jhmdb_sentences") + 1:]
        parts = tuple(p for p in parts if p != ".")
        return self.root.joinpath(*parts)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        video_id, frame_path, mask_path, total, query = self.samples[index]
        try:
            frame = int(frame_path.stem)
        except ValueError as err:
            raise DatasetFormatError(f"{frame_path}: frame file names must be 1-based numbers like 00001.png") from err
        numbers = centered_window(frame, self.num_frames, 1, total)
        valid_index = numbers.index(frame)
        frames = [read_rgb(frame_path.parent / f"{n:05d}.png") for n in numbers]
        all_masks = read_jhmdb_mat(mask_path)
        if frame > len(all_masks):
            raise DatasetFormatError(f"{mask_path}: no mask for frame {frame} ({len(all_masks)} masks)")
        mask = all_masks[frame - 1] > 0
        h, w = mask.shape
        target = make_target(
            mask[None], [0], clean_caption(query), (w, h),
            frames_idx=torch.as_tensor(numbers, dtype=torch.int64),
            valid_indices=torch.tensor([valid_index]),
            image_id=jhmdb_image_id(video_id, frame),
            video_id=video_id, exp_id="0",
            frame_names=[f"{n:05d}" for n in numbers],
            dataset_name="jhmdb",
        )
        if self.transforms is not None:
            return self.transforms(frames, target)
        return frames, target
