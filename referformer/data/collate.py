"""Batching clips of different sizes: pad to a multiple of 32 with a padding mask.

Matches the original ``util.misc.collate_fn`` / ``nested_tensor_from_videos_list(size_divisibility=32)``:
the batch is padded to the largest ``T``, ``H`` and ``W`` (``H`` and ``W`` rounded **up** to a
multiple of 32), with zeros in padded pixels (zero = the mean colour after normalisation) and a
boolean mask that is True on padding. The original returns ``(NestedTensor, targets)``;
:class:`VideoBatch` carries the same two tensors under explicit names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["VideoBatch", "pad_videos", "collate_clips"]


@dataclass
class VideoBatch:
    """A padded batch. ``frames`` float32 ``[B, T, 3, H, W]``; ``padding_mask`` bool ``[B, T, H, W]``
    (True = padding); ``targets`` one target dict per clip (not padded, see each dataset)."""

    frames: torch.Tensor
    padding_mask: torch.Tensor
    targets: list[dict]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "VideoBatch":
        """Move frames, mask and every tensor in the targets to ``device``."""
        targets = [{k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in self.targets]
        return VideoBatch(self.frames.to(device, non_blocking=non_blocking),
                          self.padding_mask.to(device, non_blocking=non_blocking), targets)

    def pin_memory(self) -> "VideoBatch":
        """Pinned copies (used by ``DataLoader(pin_memory=True)``)."""
        return VideoBatch(self.frames.pin_memory(), self.padding_mask.pin_memory(), self.targets)


def pad_videos(videos: Sequence[torch.Tensor], size_divisibility: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad clips ``[T_i, C, H_i, W_i]`` into ``[B, T, C, H, W]`` + padding mask ``[B, T, H, W]``.

    ``T, H, W`` are the maxima over the batch; ``H`` and ``W`` are rounded up to a multiple of
    ``size_divisibility`` (0 = no rounding).
    """
    t, c, h, w = (max(v.shape[i] for v in videos) for i in range(4))
    if size_divisibility > 0:
        h = (h + size_divisibility - 1) // size_divisibility * size_divisibility
        w = (w + size_divisibility - 1) // size_divisibility * size_divisibility
    padded = videos[0].new_zeros((len(videos), t, c, h, w))
    mask = torch.ones((len(videos), t, h, w), dtype=torch.bool, device=videos[0].device)
    for v, p, m in zip(videos, padded, mask):
        p[: v.shape[0], :, : v.shape[2], : v.shape[3]].copy_(v)
        m[: v.shape[0], : v.shape[2], : v.shape[3]] = False
    return padded, mask


def collate_clips(batch: Sequence[tuple[torch.Tensor, dict]], size_divisibility: int = 32) -> VideoBatch:
    """``DataLoader`` collate function: list of ``(frames [T, 3, H, W], target)`` -> :class:`VideoBatch`."""
    frames, targets = zip(*batch)
    padded, mask = pad_videos(frames, size_divisibility)
    return VideoBatch(padded, mask, list(targets))
