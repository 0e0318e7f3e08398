"""The space-time-memory back end: one pass of a :class:`~referformer.models.propagation.SpaceTimeMemoryNet`
(or any model with the same three methods) with a bounded memory.

Per pass the memory holds

* every **given** frame the pass has reached (permanent: its masks are the ground truth), and
* the last ``memory_frames`` **predicted** frames, one every ``memory_every`` frames (first in,
  first out),

so the cost of a frame and the memory are bounded whatever the length of the video. An object is
read only from the memory frames that know it (an object given at frame 30 has no value in the
memory frames before it). Objects are merged by the model's soft aggregation (one label per
pixel); on a given frame the given objects take their masks and the other objects lose those pixels.

The model needs ``stride`` (frames are padded to a multiple of it), ``encode_frame(images)``,
``encode_value(frame, probs)`` and ``segment(frame, memory_key, memory_value)`` (see
:class:`~referformer.models.propagation.SpaceTimeMemoryNet` for the shapes); tests plug in a
hand-made model whose matching is exact on colours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.inference.device import resolve_device
from referformer.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD
from referformer.inference.propagation import FrameReader, PassPrompt
from referformer.models.propagation.memory import aggregate_logits

__all__ = ["MemoryPropagator", "processing_size"]


def processing_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(h, w)`` with the shorter side ``short_side`` (rounded; unchanged when ``None``)."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class _Entry:
    """One memory frame: key ``[1, C_k, n]``, values ``[1, K, C_v, n]``, ``known`` bool ``[K]``."""

    key: Tensor
    value: Tensor
    known: np.ndarray


class MemoryPropagator:
    """A :class:`~referformer.inference.propagation.PropagationBackend` over a space-time-memory model.

    Args:
        model: the network (moved to ``device``, eval mode).
        device: where it runs (``"auto"`` accepted).
        short_side: processing size (``None``: the original size).
        memory_frames, memory_every: the recent-memory bound (see the module docstring).
        name: how results name the propagator.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", *, short_side: int | None = None,
                 memory_frames: int = 6, memory_every: int = 5, name: str = "memory") -> None:
        if memory_frames < 1 or memory_every < 1:
            raise ValueError("memory_frames and memory_every must be at least 1")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.short_side, self.memory_frames, self.memory_every, self.name = short_side, memory_frames, memory_every, name
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return processing_size(height, width, self.short_side)

    def _encode(self, image: np.ndarray):
        """RGB uint8 ``[h, w, 3]`` -> the model's encoded frame of the padded, normalised image."""
        stride = int(self.model.stride)
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255
        x = (x - self._mean) / self._std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % stride, 0, -h % stride))  # zeros = the mean colour after normalisation
        return self.model.encode_frame(x)

    def _read(self, frame, entries: Sequence[_Entry], known: np.ndarray, num_objects: int) -> Tensor:
        """Logits ``[1, K, H, W]`` (padded size) of the known objects; objects read together when
        the same memory frames know them."""
        height, width = frame.images.shape[-2:]
        logits = torch.full((1, num_objects, height, width), -20.0, device=self.device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for o in np.flatnonzero(known):
            groups.setdefault(tuple(i for i, e in enumerate(entries) if e.known[o]), []).append(int(o))
        for signature, objects in groups.items():
            if not signature:
                continue
            key = torch.cat([entries[i].key for i in signature], dim=2)
            value = torch.cat([entries[i].value[:, objects] for i in signature], dim=3)
            logits[:, objects] = self.model.segment(frame, key, value).float()
        return logits

    def _entry(self, frame, probs: Tensor, known: np.ndarray) -> _Entry:
        objects = [int(o) for o in np.flatnonzero(known)]
        value = self.model.encode_value(frame, probs[:, objects]).flatten(3)
        full = torch.zeros((1, probs.shape[1], *value.shape[2:]), dtype=value.dtype, device=self.device)
        full[:, objects] = value
        return _Entry(frame.key.flatten(2), full, known.copy())

    @torch.inference_mode()
    def track(self, frames: FrameReader, order: Sequence[int], prompts: Sequence[PassPrompt],
              num_objects: int) -> Iterator[np.ndarray]:
        given_at = {p.index: p for p in prompts}
        known = np.zeros(num_objects, dtype=bool)
        permanent: list[_Entry] = []
        recent: deque[_Entry] = deque(maxlen=self.memory_frames)
        for step, index in enumerate(order):
            image = frames[index]
            h, w = image.shape[:2]
            frame = self._encode(image)
            entries = permanent + list(recent)
            if known.any() and entries:
                merged = aggregate_logits(self._read(frame, entries, known, num_objects),
                                          torch.from_numpy(known)[None].to(self.device))
                probs = torch.softmax(merged, dim=1)[:, 1:]
            else:
                probs = torch.zeros((1, num_objects, *frame.images.shape[-2:]), device=self.device)
            prompt = given_at.get(index)
            if prompt is not None and prompt.given.any():
                masks = torch.zeros_like(probs)
                masks[0, :, :h, :w] = torch.from_numpy(prompt.masks).to(self.device, probs.dtype)
                given = torch.from_numpy(prompt.given).to(self.device)
                probs = torch.where(given[None, :, None, None], masks, probs * (1 - masks[:, given].amax(1, keepdim=True)))
                known |= prompt.given
                permanent.append(self._entry(frame, probs, known))
            elif known.any() and step % self.memory_every == 0:
                recent.append(self._entry(frame, probs, known))
            yield probs[0, :, :h, :w].float().cpu().numpy()
