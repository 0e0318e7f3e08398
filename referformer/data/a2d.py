"""A2D-Sentences (DATASETS.md section 3): one annotated frame inside each T-frame clip.

Reads ``a2d_sentences_single_frame_{train,test}_annotations.json`` (the MTTR-generated sample
lists ``[query, video_id, frame_idx (1-based), instance_id]``), decodes
``Release/clips320H/<video>.mp4`` and takes the referred instance's mask from
``text_annotations/a2d_annotation_with_instances/<video>/<frame_idx:05d>.h5``.

Sample = ``(frames, target)``: frames ``[T, 3, H, W]``; ``masks`` ``[1, H, W]``, ``boxes`` ``[1, 4]``,
``valid`` ``[1]``, ``labels`` ``[1]`` (0) of the annotated frame only; ``valid_indices`` int64
``[1]`` = its position in the clip; ``frames_idx`` ``[T]`` 0-based frame positions;
``image_id`` = ``v_<video>_f_<frame_idx>_i_<instance>`` (the COCO ground-truth id).
:func:`build_a2d_sample_lists` rebuilds the json lists from the raw csv/h5 files (MTTR's builder).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from referformer.data.base import RedrawDataset, make_target
from referformer.data.captions import clean_caption
from referformer.data.io import (
    VideoClip,
    read_a2d_h5,
    read_json,
    require_dir,
    require_file,
)
from referformer.data.sampling import centered_window, sample_train_clip
from referformer.errors import DatasetFormatError, UserError

__all__ = ["A2DSentences", "build_a2d_sample_lists", "a2d_image_id"]

A2D_SPLIT_FILES = {"train": "train", "test": "test", "val": "test"}


def a2d_image_id(video_id: str, frame_idx: int, instance_id: int) -> str:
    """The id of a test sample in ``a2d_sentences_test_annotations_in_coco_format.json``."""
    return f"v_{video_id}_f_{frame_idx}_i_{instance_id}"


class A2DSentences(RedrawDataset):
    """A2D-Sentences ``train`` (random clip around the annotated frame) or ``test`` (centred window).

    ``train`` redraws samples whose annotated frame loses its target in the crop; ``test`` never
    redraws. The video is decoded fully with PyAV (like the original ``read_video``), but only
    the sampled frames are converted to RGB.
    """

    def __init__(self, root: Path, split: str = "train", transforms: Callable | None = None,
                 num_frames: int = 5) -> None:
        if split not in A2D_SPLIT_FILES:
            raise UserError(f"unknown A2D-Sentences split {split!r}; choose train or test")
        self.root = require_dir(root, "the A2D-Sentences root (Release/, text_annotations/, *.json)")
        self.split = "train" if split == "train" else "test"
        self.train = self.split == "train"
        self.redraw_invalid = self.train
        self.transforms = transforms
        self.num_frames = num_frames
        list_path = self.root / f"a2d_sentences_single_frame_{A2D_SPLIT_FILES[split]}_annotations.json"
        samples = read_json(list_path, "a list of [query, video_id, frame_idx, instance_id]")
        if not isinstance(samples, list) or any(not isinstance(s, list) or len(s) != 4 for s in samples):
            raise DatasetFormatError(f"{list_path}: expected a list of [query, video_id, frame_idx, instance_id]")
        self.samples = [(str(q), str(v), int(f), int(i)) for q, v, f, i in samples]
        self.videos_dir = require_dir(self.root / "Release" / "clips320H", "the A2D mp4 clips")
        self.masks_dir = require_dir(self.root / "text_annotations" / "a2d_annotation_with_instances",
                                     "the per-frame .h5 instance masks")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        query, video_id, frame_idx, instance_id = self.samples[index]
        video = VideoClip(self.videos_dir / f"{video_id}.mp4")
        frame_id = frame_idx - 1
        if not 0 <= frame_id < len(video):
            raise DatasetFormatError(
                f"{video.path}: annotated frame {frame_idx} but the clip has {len(video)} frames")
        if self.train:
            positions = sample_train_clip(frame_id, len(video), self.num_frames, random)
        else:
            positions = centered_window(frame_id, self.num_frames, 0, len(video) - 1)
        valid_index = positions.index(frame_id)
        positions = positions[: self.num_frames]
        frames = video.frames(positions)

        h5_path = self.masks_dir / video_id / f"{frame_idx:05d}.h5"
        instances, masks = read_a2d_h5(h5_path)
        if instance_id not in instances:
            raise DatasetFormatError(f"{h5_path}: instance {instance_id} not in 'instance' {instances}")
        mask = masks[instances.index(instance_id)] > 0
        h, w = mask.shape
        target = make_target(
            mask[None], [0], clean_caption(query), (w, h),
            frames_idx=torch.as_tensor(positions, dtype=torch.int64),
            valid_indices=torch.tensor([valid_index]),
            image_id=a2d_image_id(video_id, frame_idx, instance_id),
            video_id=video_id, exp_id=str(instance_id),
            frame_names=[f"{p + 1:05d}" for p in positions],
            dataset_name="a2d",
        )
        if self.transforms is not None:
            return self.transforms(frames, target)
        return frames, target


def build_a2d_sample_lists(root: Path) -> dict[str, list[list]]:
    """MTTR's ``a2d_sentences_single_frame_{train,test}_annotations.json`` content from raw files.

    Videos of ``Release/videoset.csv`` (column 9: 0 train, 1 test) not in
    ``a2d_missed_videos.txt``; rows of ``a2d_annotation.txt`` in file order minus
    ``instance_id == "1 (copy)"``; one entry per annotated frame (sorted h5 files) that contains
    the instance: ``[query.lower(), video_id, frame_idx, instance_id]``.
    """
    root = Path(root)
    videoset = require_file(root / "Release" / "videoset.csv", "the A2D video table (9 columns, no header)")
    subset: dict[str, int] = {}
    with open(videoset, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if len(row) != 9:
                raise DatasetFormatError(f"{videoset}:{n}: expected 9 columns, got {len(row)}")
            subset[row[0]] = int(float(row[8]))
    missed_file = require_file(root / "text_annotations" / "a2d_missed_videos.txt", "one video id per line")
    missed = {v.strip() for v in missed_file.read_text().splitlines() if v.strip()}
    ann = require_file(root / "text_annotations" / "a2d_annotation.txt", "csv video_id,instance_id,query")
    with open(ann, newline="") as f:
        rows = list(csv.DictReader(f))
    h5_dir = root / "text_annotations" / "a2d_annotation_with_instances"
    out: dict[str, list[list]] = {"train": [], "test": []}
    instance_cache: dict[Path, list[int]] = {}
    for split, code in (("train", 0), ("test", 1)):
        for row in rows:
            vid, iid = row["video_id"], row["instance_id"]
            if vid in missed or subset.get(vid) != code or iid == "1 (copy)":
                continue
            for h5 in sorted((h5_dir / vid).glob("*.h5")):
                if h5 not in instance_cache:
                    instance_cache[h5] = read_a2d_h5(h5)[0]
                if int(iid) in instance_cache[h5]:
                    out[split].append([row["query"].lower(), vid, int(h5.stem), int(iid)])
    return out


def a2d_annotated_mask(root: Path, video_id: str, frame_idx: int, instance_id: int) -> np.ndarray:
    """bool ``[H, W]`` ground-truth mask of one A2D instance at a 1-based annotated frame."""
    path = Path(root) / "text_annotations" / "a2d_annotation_with_instances" / video_id / f"{frame_idx:05d}.h5"
    instances, masks = read_a2d_h5(path)
    return masks[instances.index(instance_id)] > 0
