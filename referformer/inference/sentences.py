"""Sentences -> token ids -> text features: the one tokenisation of inference.

Every entry point (``Predictor``, ``segment``, ``evaluate``, ``demo``, ``segment_video``) encodes its
sentences here:

1. normalised like the original (``" ".join(exp.lower().split())``, :func:`referformer.text.normalize_sentence`);
2. tokenised with the model's tokenizer, special tokens included, no padding;
3. **over-long sentences are refused** (``SentenceTooLongError``, a ``UserError``) rather than
   truncated: a sentence the text encoder cannot take would otherwise be answered for a different
   sentence. Callers check all sentences before creating any output (:func:`tokenize_sentences`);
   an evaluation records a refused expression in its report and goes on;
4. batched by token length (sentences of equal length together, so padding does not change their
   numerics) and encoded once per video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from referformer.errors import UserError
from referformer.text import normalize_sentence


class SentenceTooLongError(UserError):
    """A sentence has more tokens than the text encoder accepts; ``index`` is its 0-based position."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def tokenize_sentences(tokenizer: Any, sentences: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids (special tokens included) of each normalised sentence.

    Raises ``UserError`` for no sentence or an empty one, ``SentenceTooLongError`` for one longer
    than ``max_tokens`` (checked without running the tokenizer's own over-length warning).
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if not sentences:
        raise UserError("no sentence given; pass at least one referring expression")
    ids = []
    for i, sentence in enumerate(sentences):
        text = normalize_sentence(sentence)
        if not text:
            raise UserError(f"sentence {i + 1} is empty: describe the object, e.g. 'the dog'")
        length = len(tokenizer.tokenize(text)) + tokenizer.num_special_tokens_to_add()
        if length > max_tokens:
            raise SentenceTooLongError(f"sentence {i + 1} is {length} tokens long but the text encoder accepts at "
                                       f"most {max_tokens}: shorten it ({text[:40]!r}...)", i)
        ids.append(tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"])
    return ids


def encode_token_batches(model: nn.Module, ids: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                         device: torch.device) -> list[tuple[list[int], Any]]:
    """Encode token id lists with ``model.encode_text``: ``[(sentence indices, text features)]``, one
    entry per batch of at most ``batch_size`` sentences grouped by length (right padding with
    ``pad_id``, attention mask 0 there). Run inside ``torch.inference_mode`` / autocast as needed."""
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    batches = []
    for b in range(0, len(order), batch_size):
        indices = order[b:b + batch_size]
        length = max(len(ids[i]) for i in indices)
        input_ids = torch.full((len(indices), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(indices), length), dtype=torch.long)
        for row, i in enumerate(indices):
            input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
            attention[row, :len(ids[i])] = 1
        batches.append((indices, model.encode_text(input_ids.to(device), attention.to(device))))
    return batches
