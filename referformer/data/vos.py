"""Video object segmentation data: every object's masks, for training and evaluating propagators.

Layouts read (``read_vos_split``), all with palette PNG annotations (pixel = object id):

* ``ytvos`` / ``synthetic`` / ``vos`` (Ref-YouTube-VOS, YouTube-VOS, ``referformer synth``):
  ``<root>/<split>/JPEGImages/<video>/<frame>.jpg`` and ``<root>/<split>/Annotations/<video>/<frame>.png``;
* ``davis`` (and ``vos`` when it finds one): the raw DAVIS-2017 release (``<root>[/DAVIS]/JPEGImages/480p``, ``Annotations/480p``,
  ``ImageSets/2017/<split>.txt``, splits ``train`` / ``val``), else the converted Ref-DAVIS17 layout
  (``<root>/{train,valid}/JPEGImages`` + ``Annotations``, which hold DAVIS's *unsupervised*
  annotations: other object ids than the semi-supervised ones).

Frames are the JPEG files of a video folder (sorted by name); a frame is annotated when a PNG of the
same stem exists (YouTube-VOS annotates every 5th frame of its full-frame-rate release).
:class:`VOSClipDataset` samples training clips from them (STM's recipe: a few frames with random
gaps, the objects of the first frame given).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from referformer.data.io import read_label_png, read_rgb, require_dir
from referformer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from referformer.errors import DatasetFormatError, UserError

__all__ = ["VOID_ID", "VOSClipDataset", "VOSVideo", "collate_vos_clips", "read_vos_split"]

VOID_ID = 255
_DAVIS_SPLITS = {"val": "val", "valid": "val", "train": "train"}
_FOLDER_SPLITS = {"val": "valid"}


@dataclass
class VOSVideo:
    """One video: ``frame_names`` (sorted JPEG stems), ``frame_paths``, ``annotations`` (frame name ->
    PNG, only annotated frames) and ``layout`` (which reader found it)."""

    video_id: str
    frame_names: tuple[str, ...]
    frame_paths: tuple[Path, ...]
    annotations: dict[str, Path] = field(default_factory=dict)
    layout: str = "vos"

    def annotated(self) -> list[int]:
        """Positions of the annotated frames."""
        return [i for i, n in enumerate(self.frame_names) if n in self.annotations]

    def labels(self, position: int) -> np.ndarray:
        """uint8/int ``[H, W]`` label map of an annotated frame (0 background, 255 void)."""
        return read_label_png(self.annotations[self.frame_names[position]])


def _davis_base(root: Path) -> Path | None:
    for base in (root / "DAVIS", root):
        if (base / "JPEGImages" / "480p").is_dir():
            return base
    return None


def _video(video_id: str, images: Path, annotations: Path, layout: str) -> VOSVideo:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise DatasetFormatError(f"{images}: no frame (expected <frame>.jpg files)")
    names = tuple(p.stem for p in paths)
    pngs = {p.stem: p for p in annotations.glob("*.png")} if annotations.is_dir() else {}
    return VOSVideo(video_id, names, tuple(paths), {n: pngs[n] for n in names if n in pngs}, layout)


def read_vos_split(root: str | Path, split: str, dataset: str = "vos") -> list[VOSVideo]:
    """Every video of a split (see the module docstring for the layouts); sorted by id."""
    root = require_dir(Path(root), "a VOS dataset root (see docs/propagation.md for the layouts)")
    base = _davis_base(root) if dataset in ("davis", "vos") else None  # "vos": any layout, found by looking
    if base is not None:
        if split not in _DAVIS_SPLITS:
            raise UserError(f"unknown DAVIS-2017 split {split!r}; choose train or val")
        listing = base / "ImageSets" / "2017" / f"{_DAVIS_SPLITS[split]}.txt"
        if not listing.is_file():
            raise DatasetFormatError(f"{listing}: file not found; expected one sequence name per line")
        ids = [s.strip() for s in listing.read_text().splitlines() if s.strip()]
        images, annotations, layout = base / "JPEGImages" / "480p", base / "Annotations" / "480p", "davis-2017"
    else:
        folder = root / _FOLDER_SPLITS.get(split, split) if dataset == "davis" else root / split
        images = require_dir(folder / "JPEGImages", f"the frames of split {split!r} (<video>/<frame>.jpg)")
        annotations = require_dir(folder / "Annotations", f"the palette masks of split {split!r}")
        ids = sorted(p.name for p in images.iterdir() if p.is_dir())
        layout = "ref-davis" if dataset == "davis" else dataset
    if not ids:
        raise DatasetFormatError(f"{images}: no video folder")
    return [_video(v, require_dir(images / v, f"the frames of video {v!r}"), annotations / v, layout) for v in ids]


class VOSClipDataset(Dataset):
    """Training clips for a propagator: item = ``(frames, target)``.

    ``frames``: ImageNet-normalised float32 ``[T, 3, H, W]``; ``target``: ``masks`` bool
    ``[T, K, H, W]`` (``K = max_objects`` slots, exclusive), ``valid`` bool ``[K]`` (False = empty
    slot) and ``video_id``. A clip is ``num_frames`` annotated frames in order, consecutive ones at
    most ``max_skip`` annotated frames apart (random); its objects are up to ``max_objects`` of
    those in the first frame (random, given in the first frame, background elsewhere when not
    chosen). ``crop``: random square crop of this many pixels after a random resize (short side
    ``crop`` x 1.0..1.3) for real datasets; ``None`` keeps the native size (the synthetic
    benchmark). ``short_side``: with ``crop=None``, every frame is first resized (bilinear; masks
    nearest) so that its short side has this many pixels, the size a propagator runs at with
    ``--short-side`` (our option, for the synthetic benchmark's second training stage; ``None`` keeps
    the native size). ``flip``: random horizontal flip of the whole clip. Randomness comes from Python's
    and numpy's global RNGs (the trainer seeds them per sample).
    """

    def __init__(self, videos: list[VOSVideo], num_frames: int = 3, max_skip: int = 5, max_objects: int = 3,
                 crop: int | None = None, flip: bool = True, short_side: int | None = None) -> None:
        self.videos = [v for v in videos if v.annotated()]
        if not self.videos:
            raise UserError("no annotated video to train on (each needs <frame>.png palette masks)")
        if short_side is not None and (crop is not None or short_side < 1):
            raise UserError(f"short_side={short_side}: a positive size, and only without a crop")
        self.num_frames, self.max_skip, self.max_objects, self.crop, self.flip = (
            num_frames, max_skip, max_objects, crop, flip)
        self.short_side = short_side
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.videos)

    def _positions(self, video: VOSVideo) -> list[int]:
        annotated = video.annotated()
        gaps = [random.randint(1, self.max_skip) for _ in range(self.num_frames - 1)]
        span = sum(gaps)
        if span >= len(annotated):  # short video: squeeze the gaps, repeat frames if needed
            gaps = [min(g, 1) if len(annotated) > 1 else 0 for g in gaps]
            span = min(sum(gaps), len(annotated) - 1)
        start = random.randint(0, len(annotated) - 1 - span)
        steps = np.cumsum([0, *gaps]).clip(max=len(annotated) - 1 - start)
        return [annotated[start + int(s)] for s in steps]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        video = self.videos[index % len(self.videos)]
        for _ in range(20):
            positions = self._positions(video)
            labels = [np.asarray(video.labels(p)) for p in positions]
            ids = [int(v) for v in np.unique(labels[0]) if 0 < v < VOID_ID]
            if ids:
                return self._sample(video, positions, labels, ids)
            video = random.choice(self.videos)
        raise RuntimeError(f"{video.video_id}: no frame with an object after 20 draws; check the annotations")

    def _sample(self, video: VOSVideo, positions: list[int], labels: list[np.ndarray],
                ids: list[int]) -> tuple[torch.Tensor, dict]:
        chosen = sorted(random.sample(ids, min(self.max_objects, len(ids))))
        images = [np.asarray(read_rgb(video.frame_paths[p])) for p in positions]
        if self.crop is not None:
            images, labels = self._crop(images, labels, chosen)
        elif self.short_side is not None:
            images, labels = self._resize(images, labels)
        if self.flip and random.random() < 0.5:
            images, labels = [im[:, ::-1] for im in images], [lab[:, ::-1] for lab in labels]
        stack = np.stack(labels)
        masks = np.zeros((len(positions), self.max_objects, *stack.shape[1:]), dtype=bool)
        for k, object_id in enumerate(chosen):
            masks[:, k] = stack == object_id
        valid = np.arange(self.max_objects) < len(chosen)
        frames = torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float() / 255
        frames = (frames - self._mean) / self._std
        return frames, {"masks": torch.from_numpy(masks), "valid": torch.from_numpy(valid), "video_id": video.video_id}

    def _resize(self, images: list[np.ndarray], labels: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        assert self.short_side is not None
        h, w = labels[0].shape
        scale = self.short_side / min(h, w)
        size = (round(w * scale), round(h * scale))
        if size == (w, h):
            return images, labels
        return ([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images],
                [np.asarray(Image.fromarray(np.asarray(lab, dtype=np.uint8)).resize(size, Image.NEAREST))
                 for lab in labels])

    def _crop(self, images: list[np.ndarray], labels: list[np.ndarray],
              chosen: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        assert self.crop is not None
        h, w = labels[0].shape
        scale = self.crop * random.uniform(1.0, 1.3) / min(h, w)
        size = (max(self.crop, round(w * scale)), max(self.crop, round(h * scale)))
        images = [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images]
        labels = [np.asarray(Image.fromarray(np.asarray(lab, dtype=np.uint8)).resize(size, Image.NEAREST))
                  for lab in labels]
        best = None
        for _ in range(10):  # prefer a crop that keeps the first frame's objects
            y, x = random.randint(0, size[1] - self.crop), random.randint(0, size[0] - self.crop)
            window = labels[0][y:y + self.crop, x:x + self.crop]
            kept = int(np.isin(window, chosen).sum())
            if best is None or kept > best[0]:
                best = (kept, y, x)
            if kept >= 100:
                break
        _, y, x = best
        return ([im[y:y + self.crop, x:x + self.crop] for im in images],
                [lab[y:y + self.crop, x:x + self.crop] for lab in labels])


def collate_vos_clips(samples: list[tuple[torch.Tensor, dict]]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Clips of one size -> ``(inputs, targets)``: inputs ``frames`` ``[B, T, 3, H, W]``,
    ``first_masks`` ``[B, K, H, W]`` and ``valid`` ``[B, K]`` (what
    ``SpaceTimeMemoryNet.forward`` takes); targets the per-clip dicts."""
    sizes = {tuple(frames.shape[-2:]) for frames, _ in samples}
    if len(sizes) > 1:
        raise UserError(f"training clips of different sizes {sorted(sizes)} in one batch: give a crop size "
                        "(--max-size) or use a dataset whose frames share one size")
    targets = [target for _, target in samples]
    inputs = {"frames": torch.stack([frames for frames, _ in samples]),
              "first_masks": torch.stack([t["masks"][0] for t in targets]),
              "valid": torch.stack([t["valid"] for t in targets])}
    return inputs, targets
