"""RefVOS on the synthetic benchmark: the model of the ``refvos-synthetic`` recipe.

Here rather than in :mod:`referformer.presets` because its vocabulary is the synthetic tokenizer's
(:func:`referformer.synthetic.tokenizer.synthetic_text_config`), which presets must not depend on.
"""

from __future__ import annotations

from referformer.config import BertTextConfig, RefVOSConfig
from referformer.synthetic.tokenizer import synthetic_text_config

__all__ = ["refvos_synthetic_config"]


def refvos_synthetic_config(vocab_size: int | None = None) -> RefVOSConfig:
    """The small RefVOS of the ``refvos-synthetic`` recipe: ResNet-18 DeepLabv3 at output stride 8
    (ASPP rates 12/24/36 scaled to the 12x16 feature maps of 96x128 frames: 2/4/6; 128 channels) and
    a 2-layer BERT of width 64 on the synthetic tokenizer (RoBERTa-style ids: ``<s>`` = the [CLS]
    position, ``<pad>`` = 1), no dropout (short training from scratch). ``vocab_size`` defaults to
    the synthetic tokenizer's."""
    text = synthetic_text_config(vocab_size)
    return RefVOSConfig(
        backbone="resnet18", output_stride=8, atrous_rates=(2, 4, 6), aspp_channels=128,
        text_encoder=BertTextConfig(vocab_size=text["vocab_size"], hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=128, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0,
                                    max_position_embeddings=text["max_position_embeddings"],
                                    type_vocab_size=1, pad_token_id=text["pad_token_id"], tokenizer="tokenizer"),
    ).validate()
