"""Which inference engine runs a model: :func:`predictor_for` / :func:`load_predictor`, the one seam.

* a ReferFormer or RefVOS model -> :class:`~referformer.inference.predictor.Predictor` (window by window);
* a ``tracklets`` model (:mod:`referformer.models.tracklets`) ->
  :class:`~referformer.inference.tracklets.TrackletPredictor` (whole videos: tracklets are built over
  every frame before any sentence is answered), with the attributes the callers of ``Predictor`` use:
  ``settings``, ``check_sentences``, ``predict`` and ``stream``
  (:class:`~referformer.inference.tracklet_stream.TrackletStream`).

``referformer segment``, ``referformer evaluate`` (the evaluation's ``load_segmenter``), ``referformer
serve``, ``referformer demo`` and :func:`referformer.segment_video` get their engine here, so a tracklets
folder never runs the ReferFormer path (``Predictor`` itself refuses one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from referformer.errors import UserError
from referformer.inference.predictor import Predictor
from referformer.inference.tracklets import TrackletPredictor, is_tracklets_model

__all__ = ["is_tracklets_model", "load_predictor", "predictor_for"]


def predictor_for(model: nn.Module, tokenizer: Any = None, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "fp32", *, propagator: Any = None,
                  **options: Any) -> Predictor | TrackletPredictor:
    """The engine for a loaded ``model`` (see the module docstring). ``tokenizer``: loaded, a folder or
    None (the model's). ``propagator``: tracklets only, a backend or a name for ``load_propagator``
    (default: the model's config). ``options``: ``Predictor``'s keyword arguments (for a tracklets model
    see :meth:`TrackletPredictor.for_model`)."""
    if is_tracklets_model(model):
        return TrackletPredictor.for_model(model, tokenizer, propagator, device, dtype, **options)
    if propagator is not None:
        raise UserError("a propagator is part of the tracklets pipeline only; for ReferFormer use --propagate")
    return Predictor.for_model(model, tokenizer, device, dtype, **options)


def load_predictor(name_or_path: str | Path, preset: str | None = None, tokenizer: Any = None,
                   device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32", *,
                   unsafe_load: bool = False, propagator: Any = None, **options: Any) -> Predictor | TrackletPredictor:
    """:func:`referformer.load_model` then :func:`predictor_for`."""
    from referformer.checkpoint import load_model

    return predictor_for(load_model(name_or_path, preset, unsafe_load=unsafe_load), tokenizer, device, dtype,
                         propagator=propagator, **options)
