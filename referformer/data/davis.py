"""Ref-DAVIS17 (DATASETS.md section 2): the converted layout reader and the converter.

Converted layout under ``root`` (= ``data/ref-davis``), what the original ``DAVIS17Dataset`` reads::

    meta_expressions/{train,valid}/meta_expressions.json
    {train,valid}/JPEGImages/<seq>/<%05d>.jpg   {train,valid}/Annotations/<seq>/<%05d>.png
    {train,valid}/meta.json                     ({"videos": {seq: {"objects": {"1": {"category"}}}}})

:func:`convert_davis` builds it from the raw DAVIS-2017 release plus ``davis_text_annotations/``
(``tools/data/convert_davis_to_ytvos.py``): four expressions per object, ids ``4k + a`` with
a = 0 annotator-1 first-frame, 1 annotator-1 full-video, 2 annotator-2 first-frame,
3 annotator-2 full-video.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Mapping

from referformer.data.base import ExpressionVideoDataset
from referformer.data.categories import DAVIS_CATEGORIES
from referformer.data.io import read_json, require_dir, require_file
from referformer.data.video_clips import VideoClipDataset
from referformer.data.ytvos import (
    PaletteMaskReader,
    labelled_expressions,
    read_expressions,
)
from referformer.errors import DatasetFormatError, UserError

__all__ = ["build_davis", "convert_davis", "read_davis_text_annotations", "DAVIS_TEXT_FILES"]

# (file, encoding) in expression-kind order a = 0..3
DAVIS_TEXT_FILES = (
    ("Davis17_annot1.txt", "utf-8"),
    ("Davis17_annot1_full_video.txt", "utf-8"),
    ("Davis17_annot2.txt", "latin-1"),
    ("Davis17_annot2_full_video.txt", "latin-1"),
)
# misspelt sequence names in the text files, fixed by the original converter
DAVIS_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
DAVIS_SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid"}


def read_davis_text_annotations(path: Path, encoding: str) -> dict[str, list[tuple[str, str]]]:
    """Parse one DAVIS text file: ``{sequence: [(obj_id, expression), ...]}`` sorted by obj_id string.

    A line is ``<seq> <obj_id> "<expression>"``; the expression is
    ``" ".join(line.split()[2:])[1:-1]`` (quotes dropped, whitespace collapsed), as in the original.
    """
    require_file(path, "a DAVIS text annotation file (lines: <seq> <obj_id> \"<expression>\")")
    by_seq: dict[str, list[tuple[str, str]]] = {}
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{path}: not {encoding} text ({err})") from err
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise DatasetFormatError(f"{path}:{n}: expected '<seq> <obj_id> \"<expression>\"', got {line!r}")
        seq = DAVIS_NAME_FIXES.get(parts[0], parts[0])
        by_seq.setdefault(seq, []).append((parts[1], " ".join(parts[2:])[1:-1]))
    return {seq: sorted(items, key=lambda x: x[0]) for seq, items in by_seq.items()}


def convert_davis(root: Path, move: bool = False) -> None:
    """Write the converted Ref-DAVIS17 layout under ``root`` from the raw release in it.

    Reads ``root/DAVIS/{JPEGImages,Annotations_unsupervised}/480p``, ``root/DAVIS/ImageSets/2017/
    {train,val}.txt``, ``root/DAVIS/davis_semantics.json`` and ``root/davis_text_annotations/``.
    The frame and annotation folders are copied (the original moves them, which then forces a
    re-extraction of DAVIS for evaluation; ``move=True`` does that).
    """
    root = Path(root)
    davis = require_dir(root / "DAVIS", "the raw DAVIS-2017 release (JPEGImages/, ImageSets/ ...)")
    semantics = read_json(davis / "davis_semantics.json", "{seq: {'1': category, ...}}")
    texts = [read_davis_text_annotations(root / "davis_text_annotations" / f, enc) for f, enc in DAVIS_TEXT_FILES]
    for split, folder in (("train", "train"), ("val", "valid")):
        list_file = require_file(davis / "ImageSets" / "2017" / f"{split}.txt", "one sequence name per line")
        seqs = [s.strip() for s in list_file.read_text().splitlines() if s.strip()]
        exp_videos, meta_videos = {}, {}
        for seq in seqs:
            for src_name, dst_name in (("JPEGImages", "JPEGImages"), ("Annotations_unsupervised", "Annotations")):
                src = require_dir(davis / src_name / "480p" / seq, f"the frames of DAVIS sequence {seq!r}")
                dst = root / folder / dst_name / seq
                if dst.exists():
                    shutil.rmtree(dst)
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.move if move else shutil.copytree)(str(src), str(dst))
            per_kind = []
            for (fname, _), text in zip(DAVIS_TEXT_FILES, texts):
                if seq not in text:
                    raise DatasetFormatError(f"{root / 'davis_text_annotations' / fname}: no line for sequence {seq!r}")
                per_kind.append(text[seq])
            expressions, eid = {}, 0
            for objects in zip(*per_kind):  # object k of the four files, position by position
                for obj_id, exp in objects:
                    expressions[str(eid)] = {"exp": exp, "obj_id": obj_id}
                    eid += 1
            frames = sorted(p.stem for p in (root / folder / "JPEGImages" / seq).glob("*.jpg"))
            exp_videos[seq] = {"expressions": expressions, "frames": frames}
            if seq not in semantics:
                raise DatasetFormatError(f"{davis / 'davis_semantics.json'}: no entry for sequence {seq!r}")
            meta_videos[seq] = {"objects": {str(k): {"category": semantics[seq][str(k)]}
                                            for k in range(1, len(semantics[seq]) + 1)}}
        out = root / "meta_expressions" / folder / "meta_expressions.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"videos": exp_videos}))
        (root / folder / "meta.json").write_text(json.dumps({"videos": meta_videos}))


def build_davis(
    root: Path,
    split: str = "train",
    transforms: Callable | None = None,
    num_frames: int = 5,
    mode: str | None = None,
    categories: Mapping[str, int] | None = DAVIS_CATEGORIES,
    resize: int | None = 360,
) -> VideoClipDataset | ExpressionVideoDataset:
    """Ref-DAVIS17 ``train`` / ``valid`` (alias ``val``).

    ``mode="clips"`` (default for train) gives training clips (local sampling even for T = 1, as
    the original DAVIS loader); ``mode="eval"`` (default for valid) one item per expression with
    every frame, and ``gt_masks()`` from ``<split>/Annotations``.
    """
    if split not in DAVIS_SPLIT_FOLDERS:
        raise UserError(f"unknown Ref-DAVIS17 split {split!r}; choose train or valid")
    root = require_dir(root, "the converted Ref-DAVIS17 root (meta_expressions/, train/, valid/); "
                             "run referformer.data.davis.convert_davis on the raw release first")
    folder = DAVIS_SPLIT_FOLDERS[split]
    exps = read_expressions(root / "meta_expressions" / folder / "meta_expressions.json",
                            root / folder / "JPEGImages")
    reader = PaletteMaskReader(root / folder / "Annotations")
    mode = mode or ("clips" if folder == "train" else "eval")
    if mode == "clips":
        return VideoClipDataset(labelled_expressions(exps, root / folder / "meta.json", categories), reader,
                                transforms, num_frames, local_sampling_single_frame=True, dataset_name="davis")
    if mode == "eval":
        return ExpressionVideoDataset(exps, "davis", resize, mask_loader=reader.video)
    raise UserError(f"unknown mode {mode!r}; choose 'clips' or 'eval'")
