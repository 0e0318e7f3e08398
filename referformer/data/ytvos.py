"""Ref-YouTube-VOS (DATASETS.md section 1) and the reader shared with Ref-DAVIS17.

Layout under ``root`` (= ``data/ref-youtube-vos``)::

    meta_expressions/{train,valid,test}/meta_expressions.json
    train/JPEGImages/<video>/<frame>.jpg   train/Annotations/<video>/<frame>.png   train/meta.json
    valid/JPEGImages/...                   test/JPEGImages/...

Splits: ``train`` (clip sampling, masks), ``valid`` = videos of the valid json minus those of the
test json (the 202 competition videos; frames in ``valid/``), ``test`` = the test json's videos
(frames in ``test/``). Frame names come only from the json ``frames`` lists (sorted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from referformer.data.base import ExpressionVideoDataset, VideoExpression
from referformer.data.captions import clean_caption
from referformer.data.categories import YTVOS_CATEGORIES
from referformer.data.io import read_json, read_label_png, require_dir
from referformer.data.video_clips import (
    ClipExpression,
    VideoClipDataset,
    check_frame_paths,
)
from referformer.errors import DatasetFormatError, UserError

__all__ = ["read_expressions", "build_ytvos", "PaletteMaskReader", "YTVOS_SPLITS"]

YTVOS_SPLITS = ("train", "valid", "test")


def _expressions_json(path: Path) -> dict:
    data = read_json(path, "{'videos': {video_id: {'expressions': {...}, 'frames': [...]}}}")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise DatasetFormatError(f"{path}: expected a top-level 'videos' object")
    return videos


def read_expressions(
    meta_path: Path,
    image_dir: Path,
    video_ids: list[str] | None = None,
    frame_ext: str = ".jpg",
) -> list[VideoExpression]:
    """Parse a ``meta_expressions.json`` into :class:`VideoExpression` records.

    Videos in file order (or ``video_ids`` order), expressions in file order; ``frame_names`` is
    the sorted ``frames`` list; frame paths are ``image_dir/<video>/<frame><frame_ext>``.
    ``obj_ids`` holds the expression's ``obj_id`` (a string, or several for list-valued ids).
    """
    videos = _expressions_json(meta_path)
    out: list[VideoExpression] = []
    for vid in video_ids if video_ids is not None else list(videos):
        entry = videos.get(vid)
        if not isinstance(entry, dict) or "frames" not in entry or "expressions" not in entry:
            raise DatasetFormatError(f"{meta_path}: video {vid!r} needs 'frames' and 'expressions'")
        names = tuple(sorted(str(f) for f in entry["frames"]))
        paths = tuple(image_dir / vid / f"{n}{frame_ext}" for n in names)
        check_frame_paths(paths, str(meta_path))
        for exp_id, exp in entry["expressions"].items():
            if not isinstance(exp, dict) or "exp" not in exp:
                raise DatasetFormatError(f"{meta_path}: video {vid!r} expression {exp_id!r} has no 'exp'")
            obj = exp.get("obj_id", ())
            objs = tuple(str(o) for o in obj) if isinstance(obj, list) else ((str(obj),) if obj != () else ())
            anno = exp.get("anno_id", ())
            annos = tuple(str(a) for a in anno) if isinstance(anno, list) else ((str(anno),) if anno != () else ())
            out.append(VideoExpression(vid, str(exp_id), clean_caption(exp["exp"]), exp["exp"], names, paths,
                                       objs, annos))
    return out


class PaletteMaskReader:
    """Mask of an expression's object at a frame: ``png(annotation_dir/<video>/<frame>.png) == obj_id``.

    A plain class (not a closure) so datasets pickle for spawn-started DataLoader workers.
    """

    def __init__(self, annotation_dir: Path) -> None:
        self.annotation_dir = Path(annotation_dir)

    def __call__(self, ce: ClipExpression, position: int) -> np.ndarray:
        e = ce.expression
        labels = read_label_png(self.annotation_dir / e.video_id / f"{e.frame_names[position]}.png")
        return labels == int(e.obj_ids[0])

    def video(self, e: VideoExpression) -> np.ndarray:
        """bool ``[L, H, W]`` ground truth of the expression over every frame."""
        return np.stack([self(ClipExpression(e, 0), t) for t in range(len(e.frame_names))])


def labelled_expressions(
    expressions: list[VideoExpression],
    meta_json: Path,
    categories: Mapping[str, int] | None,
) -> list[ClipExpression]:
    """Attach the category label (``meta.json`` objects -> ``categories``; 0 if ``categories`` is None)."""
    meta = read_json(meta_json, "{'videos': {video_id: {'objects': {obj_id: {'category': str}}}}}")
    videos = meta.get("videos", {}) if isinstance(meta, dict) else {}
    out = []
    for e in expressions:
        if not e.obj_ids:
            raise DatasetFormatError(f"{meta_json.parent}: expression {e.video_id}/{e.exp_id} has no 'obj_id'")
        label = 0
        if categories is not None:
            try:
                name = videos[e.video_id]["objects"][e.obj_ids[0]]["category"]
            except (KeyError, TypeError) as err:
                raise DatasetFormatError(
                    f"{meta_json}: no category for video {e.video_id!r} object {e.obj_ids[0]!r}"
                ) from err
            if name not in categories:
                raise DatasetFormatError(
                    f"{meta_json}: unknown category {name!r} (video {e.video_id}); pass categories=None "
                    "to label every object 0"
                )
            label = categories[name]
        out.append(ClipExpression(e, label))
    return out


def build_ytvos(
    root: Path,
    split: str = "train",
    transforms: Callable | None = None,
    num_frames: int = 5,
    categories: Mapping[str, int] | None = YTVOS_CATEGORIES,
    resize: int | None = 360,
    dataset_name: str = "ytvos",
) -> VideoClipDataset | ExpressionVideoDataset:
    """Ref-YouTube-VOS ``train`` clips, or the ``valid`` / ``test`` expressions for inference."""
    root = require_dir(root, "the Ref-YouTube-VOS root (meta_expressions/, train/, valid/)")
    if split == "train":
        exps = read_expressions(root / "meta_expressions" / "train" / "meta_expressions.json",
                                root / "train" / "JPEGImages")
        return VideoClipDataset(
            labelled_expressions(exps, root / "train" / "meta.json", categories),
            PaletteMaskReader(root / "train" / "Annotations"),
            transforms, num_frames, local_sampling_single_frame=False, dataset_name=dataset_name,
        )
    if split in ("valid", "test"):
        valid = _expressions_json(root / "meta_expressions" / "valid" / "meta_expressions.json")
        test_path = root / "meta_expressions" / "test" / "meta_expressions.json"
        test = _expressions_json(test_path) if test_path.is_file() else {}
        if split == "valid":
            ids, meta = sorted(set(valid) - set(test)), root / "meta_expressions" / "valid" / "meta_expressions.json"
        else:
            if not test:
                raise DatasetFormatError(f"{test_path}: file not found; needed for the test split")
            ids, meta = sorted(test), test_path
        exps = read_expressions(meta, root / split / "JPEGImages", ids)
        return ExpressionVideoDataset(exps, dataset_name, resize)
    raise UserError(f"unknown Ref-YouTube-VOS split {split!r}; choose one of {YTVOS_SPLITS}")
