"""Frame pre-processing of the original inference: ``T.Resize(360)``, ``ToTensor``, ImageNet ``Normalize``.

``T.Resize(360)`` on PIL images sets the *shorter* side to 360 and the longer to
``int(360 * long / short)`` (bilinear, PIL), with **no** cap on the long side (a 1280x720 video
gives 640x360; wider videos give more than 640). ``max_size`` (off by default) is our option to cap it.
Frames go through PIL so the resampling is the original's, whatever the input type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

from referformer.errors import UserError
# Frame folders are listed by the package's one listing (suffixes .bmp .jpeg .jpg .png .tif .tiff
# .webp, natural order), re-exported here.
from referformer.inference.frame_files import IMAGE_SUFFIXES, list_frame_files  # noqa: F401

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Frame = Union[Image.Image, np.ndarray, Tensor]
FramesInput = Union[str, Path, Sequence[Frame], np.ndarray, Tensor]


def to_pil(frame: Frame) -> Image.Image:
    """PIL RGB image from a PIL image, an HWC uint8 array or a CHW/HWC uint8 tensor (or float in [0, 1])."""
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, Tensor):
        t = frame.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        frame = t.numpy()
    if isinstance(frame, np.ndarray):
        arr = frame
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise UserError(f"a frame must be HxWx3 (got array of shape {arr.shape})")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).round().astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, -1)
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    raise UserError(f"unsupported frame type {type(frame).__name__}; use PIL images, HxWx3 uint8 arrays or tensors")


def load_frames(frames: FramesInput) -> list[Image.Image]:
    """Frames from a folder path, a list of frames, a [T, H, W, 3] array or a [T, 3, H, W] / [T, H, W, 3] tensor."""
    if isinstance(frames, (str, Path)):
        return [Image.open(p).convert("RGB") for p in list_frame_files(frames)]
    if isinstance(frames, (np.ndarray, Tensor)) and frames.ndim == 4:
        return [to_pil(f) for f in frames]
    if isinstance(frames, (np.ndarray, Tensor)) or isinstance(frames, Image.Image):
        return [to_pil(frames)]
    items: Iterable[Frame] = frames
    out = [to_pil(f) for f in items]
    if not out:
        raise UserError("no frames given")
    return out


def resized_size(height: int, width: int, short_side: int = 360, max_size: int | None = None) -> tuple[int, int]:
    """(H, W) after ``T.Resize(short_side)`` (torchvision's rule, incl. the optional ``max_size`` cap)."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = short_side, int(short_side * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if height <= width else (new_long, new_short)


def preprocess_frames(frames: FramesInput, short_side: int = 360, max_size: int | None = None,
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                      ) -> tuple[Tensor, tuple[int, int]]:
    """-> (normalised frames float32 [T, 3, h, w], original size (H, W) in pixels).

    All frames must share one size (a video).
    """
    images = load_frames(frames)
    width, height = images[0].size
    for i, im in enumerate(images):
        if im.size != (width, height):
            raise UserError(f"frame {i} is {im.size[0]}x{im.size[1]} but frame 0 is {width}x{height}; "
                            "all frames of a video must have one size")
    size = resized_size(height, width, short_side, max_size)
    out = []
    for im in images:
        im = TF.resize(im, list(size), interpolation=TF.InterpolationMode.BILINEAR)
        out.append(TF.normalize(TF.to_tensor(im), list(mean), list(std)))
    return torch.stack(out), (height, width)
