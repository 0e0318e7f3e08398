"""Masked-language-model fine-tuning of BERT on referring expressions (RefVOS's optional recipe step).

RefVOS may start its text encoder from a BERT that was first fine-tuned with the MLM objective on
the training set's referring expressions. This module is that step, kept apart from the
segmentation training:

1. ``mlm_model_from_encoder(encoder)`` wraps a ``BertModel`` (e.g. ``RefVOS.text_encoder``) in a
   ``BertForMaskedLM`` that **shares** its weights (the decoder is tied to the word embeddings);
2. ``finetune_mlm(sentences, mlm_model, tokenizer, MLMConfig(...))`` runs N optimiser steps of MLM
   with ``transformers.DataCollatorForLanguageModeling`` (15% of the tokens chosen; of those 80%
   -> [MASK], 10% -> a random token, 10% unchanged);
3. ``save_encoder_weights(mlm_model.bert, path)`` (:mod:`referformer.models.bert`) writes the encoder
   (``BertModel`` keys) as safetensors; ``RefVOS.load_text_encoder(path)`` / ``load_encoder_weights``
   read it back.

``run_mlm_recipe`` chains the three. ``train_wordpiece_tokenizer`` builds a small BERT-style
tokenizer from sentences, for tests and synthetic data where ``bert-base-uncased`` is not at hand.

``run_mlm_stage`` is the step for a RefVOS preset, what ``referformer train --stage mlm`` runs (then
``referformer train --recipe refvos-... --text-encoder-init bert_mlm.safetensors`` starts RefVOS from it)::

    referformer train --stage mlm --root data/ref-youtube-vos --preset refvos-r101 \
        --tokenizer bert-base-uncased --init bert-base-uncased --out bert_mlm.safetensors --max-steps 1000
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from referformer.config import RefVOSConfig
from referformer.errors import UserError
from referformer.models.bert import build_bert, load_bert_weights, save_encoder_weights
from referformer.presets import get_preset
from referformer.text import load_tokenizer, normalize_sentence

__all__ = [
    "BERT_SPECIAL_TOKENS",
    "MLMConfig",
    "finetune_mlm",
    "mlm_batches",
    "mlm_loss",
    "mlm_model_from_encoder",
    "run_mlm_recipe",
    "run_mlm_stage",
    "train_wordpiece_tokenizer",
    "training_sentences",
]

BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""In id order: ``[PAD]`` = 0 (BertConfig's pad_token_id), ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4."""


@dataclass
class MLMConfig:
    """Hyper-parameters of the MLM step (AdamW, constant learning rate after a linear warm-up)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    mlm_probability: float = 0.15
    max_length: int = 64
    seed: int = 0
    normalize: bool = True  # lower-case + collapse whitespace (the datasets' caption cleaning)


def mlm_model_from_encoder(encoder: nn.Module) -> nn.Module:
    """A ``BertForMaskedLM`` whose ``.bert`` **is** ``encoder`` (a ``transformers.BertModel``).

    The MLM head is freshly initialised and its decoder tied to ``encoder``'s word embeddings, so
    training it updates ``encoder`` in place.
    """
    from transformers import BertForMaskedLM

    mlm = BertForMaskedLM(encoder.config)
    mlm.bert = encoder
    mlm.tie_weights()
    return mlm.to(next(encoder.parameters()).device)


def _clean(sentences: Sequence[str], normalize: bool) -> list[str]:
    cleaned = [normalize_sentence(s) if normalize else s for s in sentences]
    cleaned = [s for s in cleaned if s]
    if not cleaned:
        raise UserError("MLM fine-tuning got no non-empty sentence; give the referring expressions of the dataset")
    return cleaned


def mlm_batches(sentences: Sequence[str], tokenizer: Any, batch_size: int, mlm_probability: float = 0.15,
                max_length: int = 64, seed: int | None = None) -> Any:
    """Endless iterator of MLM batches: dicts with ``input_ids``, ``attention_mask`` (and
    ``token_type_ids``) int64 ``[b, L]`` and ``labels`` ``[b, L]`` (-100 where not masked).

    Sentences are drawn in a random order (reshuffled every pass); a batch where nothing got masked
    is masked again (short sentences make it likely). Masking is
    ``DataCollatorForLanguageModeling`` with the 80/10/10 rule. ``seed`` makes both reproducible
    (the collator's own generator where transformers has one, torch's global one otherwise).
    """
    import inspect

    from transformers import DataCollatorForLanguageModeling

    if tokenizer.mask_token is None:
        raise UserError("the tokenizer has no mask token ([MASK]); MLM needs a BERT tokenizer")
    options: dict[str, Any] = {"mlm": True, "mlm_probability": mlm_probability, "return_tensors": "pt"}
    accepted = inspect.signature(DataCollatorForLanguageModeling.__init__).parameters
    if "mask_replace_prob" in accepted:  # explicit 80/10/10 (the default, and the only rule of older versions)
        options.update(mask_replace_prob=0.8, random_replace_prob=0.1)
    if seed is not None and "seed" in accepted:
        options["seed"] = seed
    elif seed is not None:
        torch.manual_seed(seed)
    collator = DataCollatorForLanguageModeling(tokenizer, **options)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    encoded = [tokenizer(s, truncation=True, max_length=max_length) for s in sentences]
    while True:
        order = torch.randperm(len(encoded), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start:start + batch_size]]
            batch = collator(chunk)
            while not bool((batch["labels"] != -100).any()):  # nothing masked: the loss would be NaN
                batch = collator(chunk)
            yield batch


def mlm_loss(mlm_model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens of one ``mlm_batches`` batch (scalar)."""
    device = next(mlm_model.parameters()).device
    return mlm_model(**{k: v.to(device) for k, v in batch.items()}).loss


def finetune_mlm(sentences: Sequence[str], mlm_model: nn.Module, tokenizer: Any, config: MLMConfig | None = None,
                 progress: bool = True) -> list[float]:
    """Run ``config.steps`` MLM optimiser steps on ``sentences``; returns the loss of every step.

    ``mlm_model`` is a ``BertForMaskedLM`` (see :func:`mlm_model_from_encoder`), trained in place on
    its current device. Sentence order and masking are seeded by ``config.seed``.
    """
    from tqdm.auto import tqdm

    config = config or MLMConfig()
    if config.steps < 1 or config.batch_size < 1:
        raise UserError(f"MLM steps and batch size must be >= 1 (got {config.steps}, {config.batch_size})")
    if not 0.0 < config.mlm_probability < 1.0:
        raise UserError(f"mlm_probability must be in (0, 1) (got {config.mlm_probability})")
    sentences = _clean(sentences, config.normalize)
    batches = mlm_batches(sentences, tokenizer, config.batch_size, config.mlm_probability, config.max_length,
                          seed=config.seed)

    decay = [p for n, p in mlm_model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in mlm_model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    warmup = max(config.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))

    mlm_model.train()
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="MLM fine-tuning", disable=not progress)
    for _ in bar:
        loss = mlm_loss(mlm_model, next(batches))
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"MLM loss is {value} at step {len(losses) + 1}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(value)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def run_mlm_recipe(sentences: Sequence[str], encoder: nn.Module, tokenizer: Any, output: str | Path,
                   config: MLMConfig | None = None, progress: bool = True) -> list[float]:
    """MLM-fine-tune ``encoder`` (a ``BertModel``, in place) on ``sentences`` and save it to ``output``
    (safetensors) for RefVOS to start from. Returns the per-step losses."""
    mlm = mlm_model_from_encoder(encoder)
    losses = finetune_mlm(sentences, mlm, tokenizer, config, progress=progress)
    save_encoder_weights(mlm.bert, output)
    return losses


def train_wordpiece_tokenizer(sentences: Sequence[str], vocab_size: int = 200, output_dir: str | Path | None = None) -> Any:
    """A lower-casing WordPiece tokenizer trained on ``sentences`` (``tokenizers`` library, in a blink),
    wrapped as a ``transformers.PreTrainedTokenizerFast`` with BERT's special tokens and
    ``[CLS] ... [SEP]`` framing. Saved in the Hugging Face format to ``output_dir`` when given.
    Not the ``bert-base-uncased`` vocabulary: only for tests and synthetic data."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1,
                                        special_tokens=list(BERT_SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(list(sentences), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep_id), ("[CLS]", cls_id))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    if output_dir is not None:
        wrapped.save_pretrained(str(output_dir))
    return wrapped


# ---- the recipe step (`referformer train --stage mlm`) -------------------------------------------
def training_sentences(root: str | Path, split: str = "train") -> list[str]:
    """Every referring expression of ``root/meta_expressions/<split>/meta_expressions.json`` (the
    Ref-YouTube-VOS layout, also MeViS-converted and ``referformer synth`` data), in file order."""
    import json

    path = Path(root) / "meta_expressions" / split / "meta_expressions.json"
    if not path.is_file():
        raise UserError(f"{path} not found; give a Ref-YouTube-VOS-layout dataset with --root or a text "
                        "file with one sentence per line with --sentences")
    videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
    return [e["exp"] for v in videos.values() for e in v["expressions"].values()]


def run_mlm_stage(sentences: Sequence[str], preset: str, tokenizer: str, output: str | Path,
                  config: MLMConfig | None = None, init: str | None = None, progress: bool = True) -> list[float]:
    """The MLM step of RefVOS for a preset: builds only the BERT of RefVOS preset ``preset`` (from
    ``init`` weights when given: a Hugging Face BERT folder / cached name or a ``.safetensors``),
    MLM-fine-tunes it on ``sentences`` with ``tokenizer`` (a BERT tokenizer folder or cached name) and
    saves it to ``output`` (safetensors, ``BertModel`` keys; ``referformer train --text-encoder-init``).
    Returns the per-step losses."""
    model_config = get_preset(preset).config
    if not isinstance(model_config, RefVOSConfig):
        raise UserError(f"preset {preset!r} is not a RefVOS model (see `referformer presets`)")
    encoder = build_bert(model_config)  # only the BERT is trained here, not the whole RefVOS
    if init:
        load_bert_weights(encoder, init)
    return run_mlm_recipe(sentences, encoder, load_tokenizer(tokenizer), output, config, progress=progress)
