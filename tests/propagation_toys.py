"""Stand-ins for the propagation tests (``from propagation_toys import ...``; pytest puts ``tests/`` on the path).

* :class:`ColourModel`: a space-time-memory "network" whose matching is exact on colours: the key of
  a pixel is its (normalised) colour times 20, the value of an object is its mask, and the decoder
  is the identity. Through the real memory read (:func:`referformer.models.propagation.read_memory`,
  softmax of ``-|q - k|^2``) a pixel reads the mean mask value of the memory pixels of exactly its
  colour, so on flat-coloured scenes the propagated masks are hand-computable: an object is the set
  of pixels of its colour.
* :func:`draw`: flat-coloured frames with squares; :func:`save_palette`: palette PNG masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from referformer.inference.propagation_memory import MemoryPropagator
from referformer.models.propagation import EncodedFrame, read_memory
from referformer.palette import VOC_PALETTE

BACKGROUND = (40, 40, 40)
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)


class ColourModel(nn.Module):
    """Exact colour matching (see the module docstring); ``memory_sizes`` records N of every read."""

    stride = 1

    def __init__(self) -> None:
        super().__init__()
        self.memory_sizes: list[int] = []

    def encode_frame(self, images: torch.Tensor) -> EncodedFrame:
        return EncodedFrame(images, images * 20.0, [])

    def encode_value(self, frame: EncodedFrame, probs: torch.Tensor) -> torch.Tensor:
        return probs[:, :, None]  # [B, K, 1, H, W]

    def segment(self, frame: EncodedFrame, memory_key: torch.Tensor, memory_value: torch.Tensor) -> torch.Tensor:
        self.memory_sizes.append(int(memory_key.shape[-1]))
        read = read_memory(frame.key, memory_key, memory_value)[:, :, 0]
        return torch.logit(read.clamp(1e-6, 1 - 1e-6))


def colour_propagator(memory_frames: int = 2, memory_every: int = 1) -> MemoryPropagator:
    return MemoryPropagator(ColourModel(), "cpu", memory_frames=memory_frames, memory_every=memory_every,
                            name="colour")


def draw(height: int, width: int, squares_per_frame: list[list[tuple[tuple[int, int, int], int, int, int]]]) -> np.ndarray:
    """Frames ``uint8 [T, H, W, 3]``: per frame, squares ``(colour, x, y, size)`` drawn in order (later on
    top) on the flat background; parts outside the frame are cut."""
    frames = np.empty((len(squares_per_frame), height, width, 3), np.uint8)
    frames[:] = BACKGROUND
    for t, squares in enumerate(squares_per_frame):
        for colour, x, y, size in squares:
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + size, width), min(y + size, height)
            if x1 > x0 and y1 > y0:
                frames[t, y0:y1, x0:x1] = colour
    return frames


def colour_mask(frames: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """bool ``[..., H, W]``: pixels of exactly ``colour``."""
    return (frames == np.array(colour, np.uint8)).all(-1)


def save_palette(labels: np.ndarray, path: Path) -> Path:
    image = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    image.putpalette(list(VOC_PALETTE))
    image.save(path)
    return path


def save_frames(frames: np.ndarray, folder: Path, suffix: str = ".png") -> Path:
    """Frames as lossless images ``<folder>/<%05d><suffix>`` (PNG keeps the colours exact)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(frames):
        Image.fromarray(image).save(folder / f"{t:05d}{suffix}")
    return folder
