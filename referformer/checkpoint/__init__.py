"""Checkpoints: the official format (:mod:`.official`), our folders (:mod:`.pretrained`), the
inference settings a folder carries (:mod:`.settings`), models by name (:mod:`.registry`: bundled,
published ones fetched into the cache by :mod:`.install`, ``hf://`` ones by :mod:`.hub`), and the
one loader over all of them (:func:`load_model`, :mod:`.loader`)."""

from referformer.checkpoint.cache import referformer_home
from referformer.checkpoint.card import model_card, write_model_card
from referformer.checkpoint.hub import push_to_hub
from referformer.checkpoint.install import fetch_published
from referformer.checkpoint.loader import load_model, read_state_dict
from referformer.checkpoint.official import (infer_architecture, load_official_checkpoint, load_official_state_dict,
                                             official_to_ours, ours_to_official, read_official_checkpoint,
                                             safe_torch_load, save_official_checkpoint, to_official_state_dict)
from referformer.checkpoint.pretrained import (CONFIG_FILE, MODEL_TYPES, WEIGHTS_FILE, build_from_config,
                                               export_training_checkpoint, read_inference_settings,
                                               read_pretrained_config, save_pretrained)
from referformer.checkpoint.registry import BUNDLED_MODELS, bundled_model_dir, resolve_checkpoint
from referformer.checkpoint.settings import QUERY_POLICIES, InferenceSettings
from referformer.checkpoint.zoo import PUBLISHED, PublishedCheckpoint, register_published

__all__ = [
    "BUNDLED_MODELS", "CONFIG_FILE", "MODEL_TYPES", "PUBLISHED", "QUERY_POLICIES", "WEIGHTS_FILE", "InferenceSettings",
    "PublishedCheckpoint", "fetch_published", "model_card", "push_to_hub", "referformer_home", "register_published",
    "write_model_card",
    "build_from_config", "bundled_model_dir", "export_training_checkpoint", "infer_architecture",
    "load_model", "load_official_checkpoint", "load_official_state_dict", "official_to_ours", "ours_to_official",
    "read_inference_settings", "read_official_checkpoint", "read_state_dict", "read_pretrained_config", "resolve_checkpoint",
    "safe_torch_load", "save_official_checkpoint", "save_pretrained", "to_official_state_dict",
]
