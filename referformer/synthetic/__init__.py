"""Synthetic referring-video benchmark: moving shapes with unique referring expressions.

Written in the Ref-YouTube-VOS layout (so the real loaders, training and evaluation run on it),
with ``expression_kinds.json`` labelling each expression's kinds and triviality, and a tiny
download-free tokenizer + RoBERTa config for a small text encoder. See docs/synthetic.md.

Modules: ``scenes`` (shapes, motion types, rendering), ``sampling`` (random scenes), ``facts``
(three-valued predicates on the ground truth), ``grammar`` (expressions, kinds, uniqueness),
``writer`` (the on-disk layout), ``kinds`` (the labels file), ``tokenizer`` (text stack),
``refvos`` (the RefVOS model of the ``refvos-synthetic`` recipe).
"""

from referformer.synthetic.grammar import KINDS, grammar_vocabulary
from referformer.synthetic.kinds import (
    ExpressionLabel,
    expression_groups,
    read_expression_kinds,
    write_expression_kinds,
)
from referformer.synthetic.scenes import SHAPES, SceneConfig
from referformer.synthetic.tokenizer import build_synthetic_tokenizer, synthetic_text_config
from referformer.synthetic.writer import SYNTHETIC_CATEGORIES, generate_dataset, make_video, write_split

__all__ = [
    "KINDS",
    "SHAPES",
    "SYNTHETIC_CATEGORIES",
    "ExpressionLabel",
    "SceneConfig",
    "build_synthetic_tokenizer",
    "expression_groups",
    "generate_dataset",
    "grammar_vocabulary",
    "make_video",
    "read_expression_kinds",
    "synthetic_text_config",
    "write_expression_kinds",
    "write_split",
]
