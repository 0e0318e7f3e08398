"""Clip augmentations of the original (``datasets/transforms_video.py``, ``transforms_image.py``).

Every transform is a callable ``(frames, target) -> (frames, target)`` where ``frames`` is a list
of T RGB PIL images of one size and ``target`` a dict holding at least

* ``masks``  bool ``[N, H, W]`` (N = T for video samples, 1 for A2D / JHMDB / RefCOCO),
* ``boxes``  float32 ``[N, 4]`` xyxy in pixels (inclusive extents: ``x2`` = last mask column),
* ``valid``  int ``[N]``, ``caption`` str, ``size`` / ``orig_size`` int64 ``[2]`` = ``[h, w]``.

The same geometric parameters are applied to every frame, mask and box of a clip; the photometric
distortion is drawn per frame (as in the original). :class:`ToNormalizedTensor` ends a pipeline:
frames become one float32 ``[T, 3, H, W]`` ImageNet-normalised tensor and boxes normalised
``cx, cy, w, h``.

Randomness comes from Python's ``random`` (flip, scale, branch, crop size), ``torch`` (crop
offset, via ``torchvision``'s ``RandomCrop.get_params``) and ``numpy.random`` (photometric
distortion), exactly the generators the original draws from, so that seeding them (see
:func:`referformer.data.loader.seed_worker`) makes a worker reproducible.

With the defaults every pipeline is the original's (``DATASETS.md`` section 7; checked in
tests/test_training_claims.py and tests/test_data_transforms.py). Deliberate differences are
options, each off by default:

* ``RandomHorizontalFlip(swap_whole_words=True)`` swaps only the *words* left/right; the default
  (False) is the original's plain substring swap (``"bright"`` -> ``"bleft"``).
* ``PhotometricDistort(clip=True)`` saturates to [0, 255]; the default (False) reproduces the
  original's unclipped ``astype(uint8)`` (values wrap modulo 256, which numpy only guarantees on
  some platforms; we wrap explicitly so every platform gives the x86 result).
* ``video_train_transforms(photometric=False)`` leaves the photometric distortion out.

torchvision ``transforms.v2.functional`` does the pixel work (PIL bilinear resize, crops, flips,
nearest mask resize); the box arithmetic is written out because the original's exact float32 order
of operations (and its inclusive boxes) must be kept to reproduce its outputs bit for bit.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomCrop

from referformer.data.captions import swap_left_right

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "RandomHorizontalFlip",
    "PhotometricDistort",
    "RandomSelect",
    "RandomResize",
    "RandomSizeCrop",
    "Check",
    "ToNormalizedTensor",
    "resize_shorter_side",
    "video_train_transforms",
    "video_val_transforms",
    "image_train_transforms",
    "image_val_transforms",
    "TRAIN_SCALES",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_SCALES = (288, 320, 352, 392, 416, 448, 480, 512)

Frames = list[Image.Image]
Target = dict
Transform = Callable[[Frames, Target], tuple]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, frames: Frames, target: Target):
        for t in self.transforms:
            frames, target = t(frames, target)
        return frames, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def hflip(frames: Frames, target: Target) -> tuple[Frames, Target]:
    """Mirror frames and masks; boxes ``[w - x2, y1, w - x1, y2]`` (the original's formula)."""
    w, _ = frames[0].size
    target = dict(target)
    frames = [F.horizontal_flip(im) for im in frames]
    if "boxes" in target:
        boxes = target["boxes"]
        target["boxes"] = boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([w, 0, w, 0])
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return frames, target


class RandomHorizontalFlip:
    """With probability ``p`` mirror the whole clip and swap "left"/"right" in the caption.

    ``swap_whole_words=False`` (default) is the original's substring swap; True (our option) swaps
    whole words only. See :func:`referformer.data.captions.swap_left_right`.
    """

    def __init__(self, p: float = 0.5, swap_whole_words: bool = False) -> None:
        self.p = p
        self.swap_whole_words = swap_whole_words

    def __call__(self, frames: Frames, target: Target):
        if random.random() < self.p:
            target = dict(target)
            target["caption"] = swap_left_right(target["caption"], whole_words=self.swap_whole_words)
            return hflip(frames, target)
        return frames, target


def wrap_to_uint8(values: np.ndarray) -> np.ndarray:
    """The original's unclipped ``astype("uint8")`` as x86 computes it: truncate toward zero, then
    wrap modulo 256 (300.7 -> 44, -10.2 -> 246). Written out because numpy leaves it undefined."""
    return (np.trunc(values).astype(np.int64) & 255).astype(np.uint8)


class PhotometricDistort:
    """The original SSD-style distortion, drawn independently for every frame (numpy RNG).

    Per frame (float32 RGB): brightness ``+U(-32, 32)`` (p 0.5); then with p 0.5 either
    ``[contrast, ->HSV, saturation, hue, ->BGR]`` or ``[->HSV, saturation, hue, ->BGR, contrast]``
    (contrast ``xU(0.5, 1.5)``, saturation ``S xU(0.5, 1.5)``, hue ``H + U(-18, 18)`` wrapped to
    [0, 360), each p 0.5; the colour conversions treat the RGB array as BGR, as the original
    does); then a random channel permutation (p 0.5).
    ``clip=False`` casts to uint8 like the original's unclipped ``astype`` (wrap-around).
    """

    PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

    def __init__(self, clip: bool = False) -> None:
        self.clip = clip

    @staticmethod
    def _contrast(img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            img *= np.random.uniform(0.5, 1.5)
        return img

    @staticmethod
    def _saturation_hue(img: np.ndarray) -> np.ndarray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if np.random.randint(2):
            img[:, :, 1] *= np.random.uniform(0.5, 1.5)
        if np.random.randint(2):
            hue = img[:, :, 0]
            hue += np.random.uniform(-18.0, 18.0)
            hue[hue > 360.0] -= 360.0
            hue[hue < 0.0] += 360.0
        return cv2.cvtColor(img, cv2.COLOR_HSV2BGR)

    def distort(self, image: Image.Image) -> Image.Image:
        img = np.asarray(image).astype(np.float32)
        if np.random.randint(2):
            img += np.random.uniform(-32, 32)
        if np.random.randint(2):
            img = self._saturation_hue(self._contrast(img))
        else:
            img = self._contrast(self._saturation_hue(img))
        if np.random.randint(2):
            img = img[:, :, self.PERMS[np.random.randint(len(self.PERMS))]]
        out = np.clip(img, 0, 255).astype(np.uint8) if self.clip else wrap_to_uint8(img)
        return Image.fromarray(np.ascontiguousarray(out))

    def __call__(self, frames: Frames, target: Target):
        return [self.distort(im) for im in frames], target


class RandomSelect:
    """Apply ``first`` with probability ``p``, otherwise ``second``."""

    def __init__(self, first: Transform, second: Transform, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, frames: Frames, target: Target):
        if random.random() < self.p:
            return self.first(frames, target)
        return self.second(frames, target)


def size_with_aspect_ratio(image_wh: tuple[int, int], size: int, max_size: int | None = None) -> tuple[int, int]:
    """Output ``(h, w)`` whose shorter side is ``size`` (the original ``get_size_with_aspect_ratio``).

    The long side is ``int(size * long / short)`` (floor); if it would exceed ``max_size`` the
    short side becomes ``round(max_size * short / long)``; unchanged if the short side already is
    ``size``.
    """
    w, h = image_wh
    if max_size is not None:
        min_original, max_original = float(min(w, h)), float(max(w, h))
        if max_original / min_original * size > max_size:
            size = int(round(max_size * min_original / max_original))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize(frames: Frames, target: Target, size_hw: tuple[int, int]) -> tuple[Frames, Target]:
    """Resize frames (PIL bilinear), masks (nearest) and boxes (scaled) to ``size_hw``."""
    h, w = size_hw
    old_w, old_h = frames[0].size
    frames = [F.resize(im, [h, w], interpolation=InterpolationMode.BILINEAR) for im in frames]
    target = dict(target)
    ratio_w, ratio_h = float(w) / float(old_w), float(h) / float(old_h)
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.as_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
    if "area" in target:
        target["area"] = target["area"] * (ratio_w * ratio_h)
    target["size"] = torch.tensor([h, w])
    if "masks" in target:
        masks = target["masks"]
        if masks.shape[-2:] != (h, w):
            # the original: interpolate(masks.float(), mode="nearest") > 0.5; nearest on uint8 is the same
            resized = F.resize(masks.to(torch.uint8), [h, w], interpolation=InterpolationMode.NEAREST)
            target["masks"] = resized > 0
    return frames, target


class RandomResize:
    """Resize the shorter side to ``random.choice(sizes)``, capping the longer side at ``max_size``."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, frames: Frames, target: Target):
        size = random.choice(self.sizes)
        return resize(frames, target, size_with_aspect_ratio(frames[0].size, size, self.max_size))


def crop(frames: Frames, target: Target, region: tuple[int, int, int, int]) -> tuple[Frames, Target]:
    """Crop ``region = (top, left, height, width)``; boxes shifted and clipped to the crop."""
    i, j, h, w = region
    frames = [F.crop(im, i, j, h, w) for im in frames]
    target = dict(target)
    target["size"] = torch.tensor([h, w])
    if "boxes" in target:
        max_size = torch.as_tensor([w, h], dtype=torch.float32)
        boxes = target["boxes"] - torch.as_tensor([j, i, j, i])
        boxes = torch.min(boxes.reshape(-1, 2, 2), max_size).clamp(min=0)
        target["area"] = (boxes[:, 1, :] - boxes[:, 0, :]).prod(dim=1)
        target["boxes"] = boxes.reshape(-1, 4)
    if "masks" in target:
        target["masks"] = target["masks"][:, i : i + h, j : j + w]
    return frames, target


class RandomSizeCrop:
    """One random crop for the whole clip: ``w ~ randint(min, min(W, max))``, same for h."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, frames: Frames, target: Target):
        width, height = frames[0].size
        w = random.randint(self.min_size, min(width, self.max_size))
        h = random.randint(self.min_size, min(height, self.max_size))
        region = RandomCrop.get_params(frames[0], [h, w])  # torch RNG, like the original
        return crop(frames, target, region)


class Check:
    """``valid = x2 > x1 and y2 > y1`` per box; invalid boxes become ``box // 1000`` (about 0)."""

    def __call__(self, frames: Frames, target: Target):
        target = dict(target)
        boxes = target["boxes"].reshape(-1, 2, 2)
        keep = torch.all(boxes[:, 1, :] > boxes[:, 0, :], dim=1)
        if not bool(keep.all()):
            fixed = target["boxes"].clone()
            fixed[~keep] = fixed[~keep] // 1000.0
            target["boxes"] = fixed
        target["valid"] = keep.to(torch.int32)
        return frames, target


class ToNormalizedTensor:
    """Frames -> float32 ``[T, 3, H, W]`` ImageNet-normalised; boxes -> normalised cxcywh."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, frames: Frames, target: Target):
        clip = torch.stack([F.pil_to_tensor(im) for im in frames]).float().div(255)
        clip = clip.sub_(self.mean).div_(self.std)
        target = dict(target)
        if "boxes" in target:
            h, w = clip.shape[-2:]
            x0, y0, x1, y1 = target["boxes"].unbind(-1)
            cxcywh = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0), (y1 - y0)], dim=-1)
            target["boxes"] = cxcywh / torch.tensor([w, h, w, h], dtype=torch.float32)
        return clip, target


def resize_shorter_side(frames: Frames, size: int = 360) -> Frames:
    """Inference resize of ``inference_ytvos.py``/``inference_davis.py``: torchvision
    ``Resize(size)`` (shorter side = ``size``, longer side floored, no maximum)."""
    return [F.resize(im, [size], interpolation=InterpolationMode.BILINEAR) for im in frames]


def video_train_transforms(
    max_size: int = 640,
    scales: Sequence[int] = TRAIN_SCALES,
    swap_whole_words: bool = False,
    photometric: bool = True,
    photometric_clip: bool = False,
) -> Compose:
    """``make_coco_transforms("train")`` of ``transforms_video.py`` (ytvos, davis, a2d, mevis, joint):
    flip, photometric distortion, then with p 0.5 either resize(scales, max_size) or
    resize([400, 500, 600]) + crop(384..600) + resize(scales, max_size), ``Check``, normalise.
    The defaults are the original's; ``swap_whole_words``, ``photometric=False`` and
    ``photometric_clip`` are our options (module docstring)."""
    steps: list[Transform] = [RandomHorizontalFlip(0.5, swap_whole_words)]
    if photometric:
        steps.append(PhotometricDistort(clip=photometric_clip))
    steps += [
        RandomSelect(
            Compose([RandomResize(scales, max_size=max_size), Check()]),
            Compose([RandomResize([400, 500, 600]), RandomSizeCrop(384, 600),
                     RandomResize(scales, max_size=max_size), Check()]),
        ),
        ToNormalizedTensor(),
    ]
    return Compose(steps)


def video_val_transforms(size: int = 360, max_size: int = 640) -> Compose:
    """``make_coco_transforms("val")``: shorter side 360 (longer side at most 640), normalise."""
    return Compose([RandomResize([size], max_size=max_size), ToNormalizedTensor()])


def image_train_transforms(swap_whole_words: bool = False) -> Compose:
    """RefCOCO pre-training (``transforms_image.py``); a final :class:`Check` marks a target lost
    by the crop as invalid (the original drops it), so the dataset redraws the sample."""
    scales = list(range(480, 769, 32))
    final_scales = [296, 328, 360, 392, 416, 448, 480, 512]
    return Compose([
        RandomHorizontalFlip(0.5, swap_whole_words),
        RandomSelect(
            RandomResize(scales, max_size=800),
            Compose([RandomResize([400, 500, 600]), RandomSizeCrop(384, 600),
                     RandomResize(final_scales, max_size=640)]),
        ),
        Check(),
        ToNormalizedTensor(),
    ])


def image_val_transforms(size: int = 360, max_size: int = 640) -> Compose:
    """RefCOCO validation: shorter side 360, longer side at most 640."""
    return video_val_transforms(size, max_size)
