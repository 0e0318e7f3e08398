"""A tiny text stack for the synthetic benchmark: no download needed.

* :func:`build_synthetic_tokenizer` trains a byte-level BPE (the ``tokenizers`` library) on every
  word the grammar can emit and saves it in the Hugging Face format, so
  ``transformers.AutoTokenizer.from_pretrained(dir)`` loads it. Special tokens are RoBERTa's, with
  RoBERTa's ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4), and encodings are
  wrapped as ``<s> ... </s>``, so it can stand in for the RoBERTa tokenizer.
* :func:`synthetic_text_config` gives the matching small ``RobertaConfig`` keyword arguments
  (vocabulary = tokenizer size, 34 + 2 positions, as RoBERTa's ``max_len + pad_id + 1``).

The words are whole tokens (every word gets its own merge chain), so captions of the grammar
encode to one token per word; other text still encodes, byte by byte.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from referformer.synthetic.grammar import grammar_vocabulary

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
"""In id order: ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2 (as in RoBERTa), ``<unk>`` = 3, ``<mask>`` = 4."""
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
MAX_TOKENS = 34  # longest encoding, special tokens included; positions = MAX_TOKENS + PAD_ID + 1


def _train_tokenizer() -> Tokenizer:
    words = grammar_vocabulary()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    # Enough merges for every word to become one token (the trainer stops when nothing is left).
    vocab_size = len(SPECIAL_TOKENS) + 256 + sum(len(w) + 1 for w in words)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(words, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", EOS_ID), ("<s>", BOS_ID), trim_offsets=True, add_prefix_space=True
    )
    for token, expected in zip(SPECIAL_TOKENS, range(len(SPECIAL_TOKENS))):
        assert tok.token_to_id(token) == expected, (token, tok.token_to_id(token))
    return tok


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """The trained tokenizer serialised (deterministic: same words -> same text)."""
    return _train_tokenizer().to_str()


def synthetic_tokenizer() -> Tokenizer:
    """The trained ``tokenizers.Tokenizer`` (in memory)."""
    return Tokenizer.from_str(_tokenizer_json())


def synthetic_vocab_size() -> int:
    """Number of tokens of the synthetic tokenizer (special tokens included)."""
    return synthetic_tokenizer().get_vocab_size(with_added_tokens=True)


def synthetic_text_config(vocab_size: int | None = None) -> dict:
    """Keyword arguments of ``transformers.RobertaConfig`` for the small synthetic text encoder:
    hidden 128, 2 layers, 4 heads, intermediate 256, 36 positions, RoBERTa's special-token ids."""
    return {
        "vocab_size": synthetic_vocab_size() if vocab_size is None else int(vocab_size),
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_TOKENS + PAD_ID + 1,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
    }


def build_synthetic_tokenizer(out_dir: str | Path) -> Path:
    """Write the tokenizer to ``out_dir`` in the Hugging Face format; returns ``out_dir``.

    Files: ``tokenizer.json`` (the BPE), ``tokenizer_config.json`` and ``special_tokens_map.json``
    (read by ``AutoTokenizer`` / ``PreTrainedTokenizerFast``), and ``config.json`` (the
    ``RobertaConfig`` of :func:`synthetic_text_config`, ``model_type`` ``roberta``).
    Written by hand rather than with ``save_pretrained`` so that the bytes do not depend on the
    installed transformers version.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
               "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_TOKENS,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    model_config = {"architectures": ["RobertaModel"], "model_type": "roberta",
                    **synthetic_text_config()}
    (out / "config.json").write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")
    return out
