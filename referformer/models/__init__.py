"""referformer.models: the ReferFormer network and its parts."""

from referformer.models.compiling import compile_model
from referformer.models.deformable_attention import set_ms_deform_attn_impl
from referformer.models.fastpath import reference_mode
from referformer.models.referformer import ReferFormer, TextFeatures, VisualFeatures, build_model

__all__ = ["ReferFormer", "compile_model", "TextFeatures", "VisualFeatures", "build_model", "reference_mode", "set_ms_deform_attn_impl"]
