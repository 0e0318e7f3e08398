"""referformer: referring video object segmentation with ReferFormer (CVPR 2022).

Public API::

    from referformer import Predictor, load_model, segment_video
    predictor = Predictor.from_pretrained("synthetic-tiny")     # a bundled name, a folder, an official .pth
    results = predictor.predict("clip.mp4", ["a red circle moving left"])
    model = load_model("converted/ytvos-r50")                   # the one loader
    results = segment_video(model, "frames/", ["a dog holding a white umbrella"])

Names are resolved lazily (PEP 562), so ``import referformer`` and commands that need no model
(``referformer evaluate --protocol ...``, ``referformer synth``) do not pay for importing torch and
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None means the module itself
_LAZY = {
    "presets": ("referformer.presets", None),
    "InferenceSettings": ("referformer.checkpoint", "InferenceSettings"),
    "load_official_checkpoint": ("referformer.checkpoint", "load_official_checkpoint"),
    "save_pretrained": ("referformer.checkpoint", "save_pretrained"),
    "ModelConfig": ("referformer.config", "ModelConfig"),
    "TextEncoderConfig": ("referformer.config", "TextEncoderConfig"),
    "SentencePrediction": ("referformer.inference.results", "SentencePrediction"),
    "load_model": ("referformer.checkpoint", "load_model"),
    "segment_video": ("referformer.inference.api", "segment_video"),
    "Predictor": ("referformer.inference.predictor", "Predictor"),
    "ReferFormer": ("referformer.models", "ReferFormer"),
    "build_model": ("referformer.models", "build_model"),
    "get_preset": ("referformer.presets", "get_preset"),
    "list_presets": ("referformer.presets", "list_presets"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'referformer' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
