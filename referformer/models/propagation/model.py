"""The space-time-memory propagator (the matching family of STM / STCN / XMem), small and trainable.

A frame is encoded once into a key (:class:`~.encoders.KeyEncoder`); a frame whose objects are known
(given or predicted) is also encoded, per object, into a value (:class:`~.encoders.ValueEncoder`).
A new frame reads the values of the memory frames by attention between keys
(:func:`~.memory.read_memory`), and a decoder turns what it read, refined with the frame's own stride-8
and stride-4 features, into one mask logit per object; :func:`~.memory.aggregate_logits` merges
the objects (one label per pixel). :meth:`SpaceTimeMemoryNet.forward` is the training pass over a
clip; the streaming runner (:mod:`referformer.inference.propagation_memory`) calls the same pieces
with a bounded memory.

Shapes: ``B`` clips or frames, ``T`` frames, ``K`` objects, ``H x W`` input pixels (multiples of
the key stride), ``h x w = H / s x W / s`` at the key stride ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from referformer.models.propagation.config import PropagatorConfig
from referformer.models.propagation.encoders import KeyEncoder, ValueEncoder, trunk_channels
from referformer.models.propagation.memory import aggregate_logits, read_memory

__all__ = ["EncodedFrame", "SpaceTimeMemoryNet", "build_propagator"]


@dataclass
class EncodedFrame:
    """A frame through the key encoder: ``images`` ``[B, 3, H, W]`` (normalised), ``key``
    ``[B, C_k, h, w]`` and ``features`` (strides 4, 8 (, 16); the last at the key stride)."""

    images: Tensor
    key: Tensor
    features: list[Tensor]


class _Refine(nn.Module):
    """Upsample x2 and add a projected skip feature (STM's refinement module, simplified)."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__()
        self.skip = nn.Conv2d(skip_channels, dim, kernel_size=3, padding=1)
        self.block = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(dim, dim, kernel_size=3, padding=1),
                                   nn.ReLU(inplace=True), nn.Conv2d(dim, dim, kernel_size=3, padding=1))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + self.skip(skip)
        return x + self.block(x)


class _Decoder(nn.Module):
    """(memory readout, the query frame's features) -> one mask logit per object at the input size."""

    def __init__(self, config: PropagatorConfig) -> None:
        super().__init__()
        dim = config.decoder_dim
        self.stride = config.key_stride
        self.inp = nn.Conv2d(config.value_dim + trunk_channels(config.key_stride), dim, kernel_size=3, padding=1)
        strides = [8, 4] if config.key_stride == 16 else [4]
        self.refine = nn.ModuleList(_Refine(trunk_channels(s), dim) for s in strides)
        self.out = nn.Conv2d(dim, 1, kernel_size=3, padding=1)

    def forward(self, readout: Tensor, features: list[Tensor]) -> Tensor:
        """readout ``[B, K, C_v, h, w]``; features of the query frame. Returns ``[B, K, H, W]``."""
        b, k = readout.shape[:2]
        expand = [f[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1) for f in features]
        x = self.inp(torch.cat([readout.flatten(0, 1), expand[-1]], dim=1))
        skips = expand[:-1][::-1]  # stride 8 (key stride 16 only), then 4
        for refine, skip in zip(self.refine, skips):
            x = refine(x, skip)
        logits = self.out(F.relu(x))
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return logits.view(b, k, *logits.shape[-2:])


class SpaceTimeMemoryNet(nn.Module):
    """The propagator network; see the module docstring. ``config``: its :class:`PropagatorConfig`."""

    def __init__(self, config: PropagatorConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.stride = config.key_stride
        self.key_encoder = KeyEncoder(config.key_stride, config.key_dim)
        self.value_encoder = ValueEncoder(config.key_stride, config.value_dim)
        self.decoder = _Decoder(config)

    # --- the pieces the streaming runner calls ------------------------------------------------
    def encode_frame(self, images: Tensor) -> EncodedFrame:
        """``images`` ImageNet-normalised ``[B, 3, H, W]`` -> :class:`EncodedFrame`."""
        key, features = self.key_encoder(images)
        return EncodedFrame(images, key, features)

    def encode_value(self, frame: EncodedFrame, probs: Tensor) -> Tensor:
        """Values ``[B, K, C_v, h, w]`` of a frame whose objects have probabilities ``probs``
        ``[B, K, H, W]`` (in [0, 1]; the "others" channel is the sum of the other objects', clamped to 1)."""
        others = (probs.sum(1, keepdim=True) - probs).clamp(0, 1)
        return self.value_encoder(frame.images, frame.features[-1], probs, others)

    def segment(self, frame: EncodedFrame, memory_key: Tensor, memory_value: Tensor) -> Tensor:
        """Mask logits ``[B, K, H, W]`` of ``frame`` from a memory (keys ``[B, C_k, N]``, values
        ``[B, K, C_v, N]``), each object on its own (merge them with :func:`aggregate_logits`)."""
        readout = read_memory(frame.key, memory_key, memory_value)
        return self.decoder(readout, frame.features)

    # --- training ---------------------------------------------------------------------------
    def forward(self, frames: Tensor, first_masks: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Propagate the first frame's masks through a clip, as STM trains.

        frames: normalised ``[B, T, 3, H, W]``; first_masks: ``[B, K, H, W]`` (0/1) of frame 0;
        valid: bool ``[B, K]`` (False = padding slot). Frame ``t >= 1`` reads the memory of frames
        ``0 .. t - 1`` (frame 0 with the given masks, later frames with their predicted
        probabilities). Returns ``{"logits": [B, T - 1, K + 1, H, W]}`` (aggregated, background first).
        """
        b, t = frames.shape[:2]
        encoded = self.encode_frame(frames.flatten(0, 1))
        per_frame = [EncodedFrame(encoded.images.view(b, t, *encoded.images.shape[1:])[:, i],
                                  encoded.key.view(b, t, *encoded.key.shape[1:])[:, i],
                                  [f.view(b, t, *f.shape[1:])[:, i] for f in encoded.features]) for i in range(t)]
        probs = first_masks.float() * valid[:, :, None, None].float()
        keys = [per_frame[0].key.flatten(2)]
        values = [self.encode_value(per_frame[0], probs).flatten(3)]
        outputs = []
        for i in range(1, t):
            logits = self.segment(per_frame[i], torch.cat(keys, dim=2), torch.cat(values, dim=3))
            merged = aggregate_logits(logits, valid)
            outputs.append(merged)
            if i < t - 1:
                probs = torch.softmax(merged, dim=1)[:, 1:]
                keys.append(per_frame[i].key.flatten(2))
                values.append(self.encode_value(per_frame[i], probs).flatten(3))
        return {"logits": torch.stack(outputs, dim=1)}


def build_propagator(config: PropagatorConfig, init_weights: bool = True) -> SpaceTimeMemoryNet:
    """The propagator of ``config`` with random weights (``init_weights`` is accepted for the model
    registry's signature; torchvision initialises the trunks either way)."""
    return SpaceTimeMemoryNet(config)
