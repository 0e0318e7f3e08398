"""referformer.models: the ReferFormer network and its parts."""

from referformer.models.referformer import ReferFormer, TextFeatures, VisualFeatures, build_model

__all__ = ["ReferFormer", "TextFeatures", "VisualFeatures", "build_model"]
