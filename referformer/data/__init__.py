"""Datasets of ReferFormer: readers, clip sampling, augmentation and batching.

Build any dataset by name with :func:`build_dataset`::

    ds = build_dataset("ytvos", Path("data/ref-youtube-vos"), "train", num_frames=5)
    frames, target = ds[0]
    loader = make_data_loader(ds, batch_size=2, num_workers=4, seed=0)   # yields VideoBatch

Names: ``ytvos``, ``davis``, ``a2d``, ``jhmdb``, ``refcoco``, ``refcoco+``, ``refcocog``,
``mevis`` and ``concat`` (joint training: RefCOCO/+/g pseudo-videos + Ref-YouTube-VOS, as the paper).
``root`` is the dataset's own folder (``data/ref-youtube-vos``, ``data/ref-davis``,
``data/a2d_sentences``, ``data/jhmdb_sentences``, ``data/coco``, the MeViS root); for ``concat`` the
folder holding ``ref-youtube-vos/`` and ``coco/``. See ``docs/datasets.md``.

Sample format (every training / clip dataset)
---------------------------------------------
``(frames, target)``:

* ``frames`` float32 ``[T, 3, H, W]``, ImageNet-normalised (``T = 1`` for RefCOCO images).
* ``target`` dict:

  ========================  =================  ==================================================
  key                       type / shape       meaning
  ========================  =================  ==================================================
  ``masks``                 bool ``[N, H, W]``  target mask per frame (N = T), or of the annotated
                                               frame only (N = 1: A2D, JHMDB). MeViS: union of
                                               the referred objects (one target per sentence).
  ``boxes``                 float32 ``[N, 4]``  normalised ``cx, cy, w, h`` (xyxy pixels before
                                               the transforms); ``[0, 0, 0, 0]`` if absent
  ``valid``                 int ``[N]``         1 where the target is visible (non-degenerate box)
  ``labels``                int64 ``[N]``       category index (ytvos 65 / davis 78 classes, COCO
                                               ids for RefCOCO, 0 for A2D / JHMDB / MeViS)
  ``caption``               str                cleaned sentence (left/right swapped if flipped)
  ``orig_size``, ``size``   int64 ``[2]``       ``[h, w]`` before / after the transforms
  ``frames_idx``            int64 ``[T]``       frame positions in the video (JHMDB: 1-based
                                               frame numbers, as the original)
  ``video_id``, ``exp_id``  str                ids to write results back
  ``frame_names``           list[str] (T)      file stems of the T frames
  ``dataset_name``          str                which dataset produced the sample
  ``valid_indices``         int64 ``[1]``       A2D / JHMDB: position of the annotated frame
  ``image_id``              str / int          A2D / JHMDB: COCO ground-truth id; RefCOCO: sample id
  ========================  =================  ==================================================

Evaluation splits of ytvos (``valid``, ``test``), davis (``valid``) and mevis (``valid_u``,
``valid``) return an :class:`~referformer.data.base.ExpressionVideoDataset`: one item per
(video, expression) with *every* frame (shorter side 360), ``.expressions`` /
``iter_expressions()`` to walk (video, expression, frame names) without loading, ``videos()`` to
group them per video and ``gt_masks()`` where the split has annotations.

Batches: :func:`collate_clips` pads to a multiple of 32 and returns a :class:`VideoBatch`
(``frames [B, T, 3, H, W]``, ``padding_mask [B, T, H, W]`` True on padding, ``targets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from referformer.data.a2d import A2DSentences
from referformer.data.base import ExpressionVideoDataset, VideoExpression
from referformer.data.captions import clean_caption, swap_left_right
from referformer.data.collate import VideoBatch, collate_clips, pad_videos
from referformer.data.davis import build_davis, convert_davis
from referformer.data.jhmdb import JHMDBSentences
from referformer.data.loader import make_data_loader, seed_worker
from referformer.data.mevis import build_mevis
from referformer.data.refcoco import (
    REFEXP_NAMES,
    RefExpClips,
    RefExpImages,
    convert_refexp,
)
from referformer.data.transforms import (
    image_train_transforms,
    image_val_transforms,
    video_train_transforms,
    video_val_transforms,
)
from referformer.data.ytvos import build_ytvos
from referformer.errors import UserError

__all__ = [
    "DATASET_NAMES",
    "build_dataset",
    "make_data_loader",
    "seed_worker",
    "collate_clips",
    "pad_videos",
    "VideoBatch",
    "ExpressionVideoDataset",
    "VideoExpression",
    "clean_caption",
    "swap_left_right",
    "convert_davis",
    "convert_refexp",
    "video_train_transforms",
    "video_val_transforms",
]

DATASET_NAMES = ("ytvos", "davis", "a2d", "jhmdb", "refcoco", "refcoco+", "refcocog", "mevis", "concat")


def _transforms(train: bool, image: bool, options: dict[str, Any]):
    if options.get("transforms") is not None:
        return options["transforms"]
    swap = options.get("swap_whole_words", False)
    if train and options.get("augment", True):
        if image:
            return image_train_transforms(swap_whole_words=swap)
        return video_train_transforms(
            max_size=options.get("max_size", 640), swap_whole_words=swap,
            photometric=options.get("photometric", True), photometric_clip=options.get("photometric_clip", False))
    return image_val_transforms() if image else video_val_transforms(max_size=options.get("max_size", 640))


def build_dataset(name: str, root: Path | str, split: str = "train", **options: Any) -> Dataset:
    """Build a dataset by name (see the module docstring for names, roots and the sample format).

    Common options: ``num_frames`` (T, default 5; RefCOCO default 1 = images, > 1 = pseudo-videos),
    ``transforms`` (a callable replacing the defaults), ``augment`` (default True: the original
    training augmentation on ``train``; False = the validation resize), ``max_size`` (640),
    ``swap_whole_words`` (default False: the original substring swap, ``"bright"`` -> ``"bleft"``;
    True, our option: flip swaps the words left/right only), ``photometric`` / ``photometric_clip``, ``mode`` (davis / mevis: ``"clips"`` or
    ``"eval"``), ``resize`` (shorter side of evaluation items, 360), ``categories`` (ytvos / davis
    name -> label table; None labels every object 0, e.g. for synthetic data).
    ``concat`` options: ``ytvos_root``, ``coco_root`` (default ``root/ref-youtube-vos``, ``root/coco``).
    """
    root = Path(root)
    num_frames = int(options.get("num_frames", 1 if name in REFEXP_NAMES else 5))
    train = split == "train"
    if name == "ytvos":
        extra = {k: options[k] for k in ("categories", "resize") if k in options}
        return build_ytvos(root, split, _transforms(train, False, options), num_frames, **extra)
    if name == "davis":
        extra = {k: options[k] for k in ("categories", "resize", "mode") if k in options}
        return build_davis(root, split, _transforms(train, False, options), num_frames, **extra)
    if name == "mevis":
        extra = {k: options[k] for k in ("resize", "mode") if k in options}
        return build_mevis(root, split, _transforms(train, False, options), num_frames, **extra)
    if name == "a2d":
        return A2DSentences(root, split, _transforms(train, False, options), num_frames)
    if name == "jhmdb":
        return JHMDBSentences(root, split, _transforms(False, False, options), num_frames)
    if name in REFEXP_NAMES:
        if num_frames == 1:
            return RefExpImages(root, name, split, _transforms(train, True, options))
        return RefExpClips(root, name, split, _transforms(train, False, options), num_frames)
    if name == "concat":
        coco_root = Path(options.get("coco_root", root / "coco"))
        ytvos_root = Path(options.get("ytvos_root", root / "ref-youtube-vos"))
        opts = {**options, "num_frames": num_frames}
        opts.pop("coco_root", None)
        opts.pop("ytvos_root", None)
        parts = [build_dataset(n, coco_root, split, **opts) for n in REFEXP_NAMES]
        parts.append(build_dataset("ytvos", ytvos_root, split, **opts))
        return ConcatDataset(parts)
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
