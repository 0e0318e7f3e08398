"""Typed configuration of the space-time-memory propagator (:mod:`referformer.models.propagation`).

A :class:`PropagatorConfig` is the architecture plus the defaults it is run with (the processing size
and the memory bound); a model folder's ``config.json`` stores it under ``"model"`` with
``"model_type": "propagator"`` (:data:`referformer.checkpoint.MODEL_TYPES`). Named presets:
:data:`PROPAGATOR_PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from referformer.config import JsonConfig
from referformer.errors import UserError

__all__ = ["PROPAGATOR_PRESETS", "PropagatorConfig", "propagator_preset"]

PROPAGATOR_BACKBONES = ("resnet18",)  # torchvision trunks (random init here; efficientnet-lite0 may follow)
KEY_STRIDES = (8, 16)


@dataclass(frozen=True)
class PropagatorConfig(JsonConfig):
    """Architecture of :class:`~referformer.models.propagation.model.SpaceTimeMemoryNet` and its run-time defaults.

    Architecture:
        backbone: trunk of the key and the value encoders (``resnet18``: torchvision's, no weights).
        key_stride: stride of keys, values and the memory read, in input pixels (8: up to ``layer2``,
            16: up to ``layer3``, STM's).
        key_dim: channels of a key (the matching space). value_dim: channels of a value per object.
        decoder_dim: channels of the mask decoder (refined with stride-8 / stride-4 skip features).

    Run-time defaults (what :func:`referformer.inference.propagators.load_propagator` uses unless told
    otherwise; they do not change the weights):
        short_side: frames are resized so their shorter side has this many pixels (``None``: as they
            are); masks always come back at the original size.
        memory_frames: predicted frames kept in the recent memory (first in, first out), beside the
            given frames, which stay for the whole pass: the memory, and so the cost per frame, is
            bounded whatever the length of the video.
        memory_every: a predicted frame enters the recent memory every this many frames.
    """

    model_type: ClassVar[str] = "propagator"

    backbone: str = "resnet18"
    key_stride: int = 16
    key_dim: int = 64
    value_dim: int = 256
    decoder_dim: int = 128
    short_side: int | None = 480
    memory_frames: int = 6
    memory_every: int = 5

    def validate(self) -> PropagatorConfig:
        """Raise ``UserError`` for a combination that cannot be built; return ``self``."""
        if self.backbone not in PROPAGATOR_BACKBONES:
            raise UserError(f"invalid PropagatorConfig: unknown backbone {self.backbone!r}; "
                            f"choose one of {', '.join(PROPAGATOR_BACKBONES)}")
        if self.key_stride not in KEY_STRIDES:
            raise UserError(f"invalid PropagatorConfig: key_stride must be 8 or 16 (got {self.key_stride})")
        for name in ("key_dim", "value_dim", "decoder_dim", "memory_frames", "memory_every"):
            if getattr(self, name) < 1:
                raise UserError(f"invalid PropagatorConfig: {name} must be at least 1 (got {getattr(self, name)})")
        if self.short_side is not None and self.short_side < 16:
            raise UserError(f"invalid PropagatorConfig: short_side must be at least 16 (got {self.short_side})")
        return self


PROPAGATOR_PRESETS: dict[str, PropagatorConfig] = {
    # the general model: ResNet-18 trunks, stride-16 keys (STM's layout), frames at 480p
    "propagator-r18": PropagatorConfig(),
    # the small CPU model of the `propagator-tiny` recipe: stride-8 keys, trained on the synthetic
    # benchmark's native 96x128 clips but run at twice that size (short side 192: its stride-4 mask head
    # then resolves 2-pixel detail of the original; measured in docs/propagation.md), every predicted
    # frame into a 4-frame recent memory
    "propagator-tiny": PropagatorConfig(key_stride=8, key_dim=32, value_dim=64, decoder_dim=32, short_side=192,
                                        memory_frames=4, memory_every=1),
}


def propagator_preset(name: str) -> PropagatorConfig:
    """The preset called ``name`` (a key of :data:`PROPAGATOR_PRESETS`)."""
    if name not in PROPAGATOR_PRESETS:
        raise UserError(f"unknown propagator preset {name!r}; choose one of {', '.join(PROPAGATOR_PRESETS)}")
    return PROPAGATOR_PRESETS[name]
