"""Write synthetic referring-video data in the Ref-YouTube-VOS layout (DATASETS.md section 1).

Under ``out`` (one folder per split; every split has masks, so valid/test can be scored)::

    <split>/JPEGImages/<video>/<frame>.jpg      RGB frames
    <split>/Annotations/<video>/<frame>.png     palette ("P") PNGs, pixel value = object id
    <split>/meta.json                           {"videos": {vid: {"objects": {"1": {"category", "frames"}}}}}
    <split>/scenes.json                         ground truth of each scene (shapes, motion, ...)
    meta_expressions/<split>/meta_expressions.json   {"videos": {vid: {"expressions": {...}, "frames"}}}
    meta_expressions/<split>/expression_kinds.json   kinds + trivial per expression (kinds.py)
    expression_kinds.json                       the labels of every split written so far
    synthetic.json                              generator settings per split

Video ids are 10 hex characters; frame names are 5-digit numbers in steps of 5 (``00000``,
``00005``, ...), as in Ref-YouTube-VOS. Each split's ``meta_expressions.json`` lists only that
split's videos (so the Ref-YouTube-VOS rule valid = valid json - test json keeps the valid videos),
and also gives ``obj_id`` for valid/test expressions. Video ``i`` of a split depends only on
``(seed, split, i)``: the same seed gives byte-identical files, whichever splits are written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from referformer.errors import UserError
from referformer.palette import VOC_PALETTE
from referformer.synthetic.facts import SceneFacts
from referformer.synthetic.grammar import Expression, describe_scene
from referformer.synthetic.kinds import (
    KINDS_FILENAME,
    ExpressionLabel,
    merge_expression_kinds,
    read_expression_kinds,
    to_json,
    write_expression_kinds,
)
from referformer.synthetic.sampling import sample_scene
from referformer.synthetic.scenes import SHAPES, Scene, SceneConfig, render_frame

GENERATOR_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SYNTHETIC_CATEGORIES: dict[str, int] = {name: i for i, name in enumerate(SHAPES)}
"""Category name -> label index, for ``build_ytvos(..., categories=SYNTHETIC_CATEGORIES)``."""


@dataclass(frozen=True)
class SyntheticVideo:
    """One generated video: its id, frame names, scene and expressions."""

    video_id: str
    frame_names: tuple[str, ...]
    scene: Scene
    expressions: tuple[Expression, ...]


def video_id(seed: int, split: str, index: int) -> str:
    """Deterministic 10-hex-character id of video ``index`` of ``split``."""
    return hashlib.sha1(f"referformer-synthetic/{seed}/{split}/{index}".encode()).hexdigest()[:10]


def frame_names(num_frames: int) -> tuple[str, ...]:
    """Ref-YouTube-VOS frame names: ``00000``, ``00005``, ... (every 5th source frame)."""
    return tuple(f"{5 * t:05d}" for t in range(num_frames))


def make_video(seed: int, split: str, index: int, config: SceneConfig, expressions_per_object: int = 3) -> SyntheticVideo:
    """Generate (in memory) video ``index`` of ``split``; a pure function of its arguments."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    scene = sample_scene(rng, config)
    facts = SceneFacts(scene)
    expressions = describe_scene(rng, facts, expressions_per_object)
    return SyntheticVideo(video_id(seed, split, index), frame_names(config.num_frames), scene, tuple(expressions))


def _write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def _save_palette_png(labels: np.ndarray, path: Path) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path, optimize=False)


def _write_frames(video: SyntheticVideo, split_dir: Path, jpeg_quality: int) -> dict[int, list[str]]:
    """Write the JPEGs and PNGs of one video; returns the frames where each object is visible."""
    img_dir = split_dir / "JPEGImages" / video.video_id
    ann_dir = split_dir / "Annotations" / video.video_id
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    present: dict[int, list[str]] = {o.obj_id: [] for o in video.scene.objects}
    for t, name in enumerate(video.frame_names):
        rgb, labels, _ = render_frame(video.scene, t)
        Image.fromarray(rgb).save(img_dir / f"{name}.jpg", quality=jpeg_quality)
        _save_palette_png(labels, ann_dir / f"{name}.png")
        for obj_id in np.unique(labels):
            if obj_id:
                present[int(obj_id)].append(name)
    video.scene._render_cache.clear()
    return present


def _scene_record(video: SyntheticVideo) -> dict:
    return {
        "objects": {
            str(o.obj_id): {
                "category": o.shape, "colour": o.colour, "size": o.size_class,
                "radius": round(o.radius, 3), "motion": o.motion, "depth": o.depth,
                "centres_xy": np.round(o.centres, 3).tolist(),
            }
            for o in video.scene.objects
        },
        "expressions": {
            str(i): {"exp": e.text, "obj_id": str(e.obj_id), "atoms": [list(a) for a in e.descriptor.atoms]}
            for i, e in enumerate(video.expressions)
        },
    }


def _clear_split(out: Path, split: str, overwrite: bool) -> None:
    targets = [out / split / "JPEGImages", out / split / "Annotations", out / split / "meta.json",
               out / split / "scenes.json", out / "meta_expressions" / split]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists; choose an empty --out or pass --overwrite")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def write_split(
    out: str | Path,
    split: str,
    seed: int,
    num_videos: int,
    config: SceneConfig = SceneConfig(),
    expressions_per_object: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Generate ``num_videos`` videos of ``split`` under ``out``; returns a summary dict
    (``videos``, ``expressions``, ``objects``, ``kinds`` counts, ``trivial`` count)."""
    if num_videos < 1:
        raise UserError(f"--videos must be at least 1, got {num_videos}")
    if not split or "/" in split or split.startswith("."):
        raise UserError(f"bad split name {split!r}; use e.g. train, valid or test")
    out = Path(out)
    _clear_split(out, split, overwrite)
    split_dir = out / split
    meta_videos, exp_videos, scenes, labels = {}, {}, {}, {}
    n_exp = n_obj = n_trivial = 0
    kind_counts: dict[str, int] = {}
    for index in tqdm(range(num_videos), desc=f"synth {split}", unit="video", disable=not progress):
        video = make_video(seed, split, index, config, expressions_per_object)
        present = _write_frames(video, split_dir, config.jpeg_quality)
        vid = video.video_id
        meta_videos[vid] = {"objects": {str(o.obj_id): {"category": o.shape, "frames": present[o.obj_id]}
                                        for o in video.scene.objects}}
        exp_videos[vid] = {
            "expressions": {str(i): {"exp": e.text, "obj_id": str(e.obj_id)} for i, e in enumerate(video.expressions)},
            "frames": list(video.frame_names),
        }
        labels[vid] = {str(i): ExpressionLabel(e.kinds, e.trivial) for i, e in enumerate(video.expressions)}
        scenes[vid] = _scene_record(video)
        n_obj += len(video.scene.objects)
        n_exp += len(video.expressions)
        n_trivial += sum(e.trivial for e in video.expressions)
        for e in video.expressions:
            for k in e.kinds:
                kind_counts[k] = kind_counts.get(k, 0) + 1
    _write_json({"videos": meta_videos}, split_dir / "meta.json")
    _write_json({"videos": scenes}, split_dir / "scenes.json")
    _write_json({"videos": exp_videos}, out / "meta_expressions" / split / "meta_expressions.json")
    write_expression_kinds(labels, out / "meta_expressions" / split / KINDS_FILENAME)
    summary = {"videos": num_videos, "objects": n_obj, "expressions": n_exp, "trivial": n_trivial,
               "kinds": dict(sorted(kind_counts.items()))}
    _update_root_files(out, split, {"seed": seed, "videos": num_videos,
                                    "expressions_per_object": expressions_per_object,
                                    "scene": asdict(config), "summary": summary})
    return summary


def _update_root_files(out: Path, split: str, settings: dict) -> None:
    """Rewrite ``synthetic.json`` and the root ``expression_kinds.json`` from the splits present
    (sorted by split name, so the bytes do not depend on the order the splits were written in)."""
    info_path = out / "synthetic.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    splits = dict(info.get("splits", {}))
    splits[split] = settings
    info = {"generator": "referformer.synthetic", "version": GENERATOR_VERSION,
            "categories": list(SHAPES), "splits": dict(sorted(splits.items()))}
    _write_json(info, info_path)
    parts = [read_expression_kinds(p) for p in sorted((out / "meta_expressions").glob(f"*/{KINDS_FILENAME}"))]
    (out / KINDS_FILENAME).write_text(to_json(merge_expression_kinds(parts)), encoding="utf-8")


def generate_dataset(
    out: str | Path,
    seed: int,
    num_videos: int,
    splits: Iterable[str] = SPLITS,
    config: SceneConfig = SceneConfig(),
    expressions_per_object: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, dict]:
    """Write ``num_videos`` videos for each of ``splits``; returns ``{split: summary}``."""
    return {split: write_split(out, split, seed, num_videos, config, expressions_per_object, overwrite, progress)
            for split in splits}
