"""Propagators by name: ``load_propagator(name)`` for ``--propagator`` / ``--propagate`` everywhere.

Names:

* a folder written by ``save_pretrained`` whose ``config.json`` has ``"model_type": "propagator"``
  (a trained :class:`~referformer.models.propagation.SpaceTimeMemoryNet`, e.g. exported from
  ``referformer train --recipe propagator-tiny``), or the name of a bundled one
  (:data:`referformer.checkpoint.BUNDLED_MODELS`: ``propagator-tiny``);
* ``sam2:CONFIG.yaml:CHECKPOINT.pt`` or ``sam2:HF_ID`` (e.g. ``sam2:facebook/sam2.1-hiera-tiny``):
  SAM 2's video predictor (``pip install "referformer[sam2]"``), see :mod:`.propagation_sam2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from referformer.checkpoint import BUNDLED_MODELS, load_model
from referformer.checkpoint.pretrained import model_type_of
from referformer.errors import UserError
from referformer.inference.propagation import PropagationBackend
from referformer.inference.propagation_memory import MemoryPropagator

__all__ = ["DEFAULT_PROPAGATOR", "load_propagator", "memory_propagator"]

# the default of `referformer propagate --propagator`: the small model trained on the synthetic benchmark
DEFAULT_PROPAGATOR = "propagator-tiny"
_SETTINGS = ("short_side", "memory_frames", "memory_every")


def memory_propagator(model: torch.nn.Module, device: str | torch.device = "cpu", name: str = "memory",
                      **overrides: Any) -> MemoryPropagator:
    """A :class:`MemoryPropagator` over a :class:`SpaceTimeMemoryNet` at its config's run-time
    defaults; ``overrides`` (``short_side``, ``memory_frames``, ``memory_every``; ``None`` keeps
    the config's) change one."""
    unknown = sorted(set(overrides) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"unknown propagator option(s) {', '.join(unknown)}; known: {', '.join(_SETTINGS)}")
    settings = {k: getattr(model.config, k) for k in _SETTINGS}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return MemoryPropagator(model, device, name=name, **settings)


def load_propagator(name: str | Path, device: str | torch.device = "cpu", **overrides: Any) -> PropagationBackend:
    """The propagator called ``name`` (see the module docstring) on ``device``; ``overrides`` go to
    :func:`memory_propagator` (ignored by SAM 2). One-line ``UserError`` s for anything wrong."""
    text = str(name)
    if text.startswith("sam2:"):
        from referformer.inference.propagation_sam2 import load_sam2

        return load_sam2(text[len("sam2:"):], device)
    if text not in BUNDLED_MODELS and not Path(text).expanduser().is_dir():
        raise UserError(f"propagator not found: {text}; pass a propagator folder (config.json + model.safetensors), "
                        "a bundled propagator or sam2:CONFIG.yaml:CHECKPOINT.pt")
    model = load_model(Path(text).expanduser() if text not in BUNDLED_MODELS else text)
    if model_type_of(model.config) != "propagator":
        raise UserError(f"{name} is a {model_type_of(model.config)} model, not a propagator: pass a propagator "
                        "folder (model_type 'propagator') or sam2:...")
    return memory_propagator(model, device, name=text, **overrides)
