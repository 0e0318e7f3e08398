"""Sentences -> RoBERTa token ids, as the original inference does it.

The original inference (``inference_ytvos.py``) normalises each expression with
``" ".join(exp.lower().split())`` (lower case, collapsed whitespace) and tokenises with
``RobertaTokenizerFast.from_pretrained("roberta-base")``, ``padding="longest"``, no truncation.
Nothing is downloaded at run time: the tokenizer comes from the local Hugging Face cache or a
directory given by the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from referformer.errors import UserError

HOW_TO_GET_TOKENIZER = ("on a connected machine run `huggingface-cli download roberta-base` (or `hf download "
                        "roberta-base`) and copy ~/.cache/huggingface here, or pass --tokenizer DIR "
                        "(a folder with tokenizer.json or vocab.json + merges.txt)")


def normalize_sentence(sentence: str) -> str:
    """Lower-case and collapse whitespace, exactly as ``inference_ytvos.py`` does."""
    return " ".join(sentence.lower().split())


def load_tokenizer(name_or_path: str | Path = "roberta-base") -> Any:
    """A fast RoBERTa tokenizer from a local directory or the offline Hugging Face cache.

    Raises ``UserError`` with instructions when it is not available locally.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(name_or_path)
    try:
        if path.is_dir() and (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
        else:
            tok = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        if path.is_dir():
            raise UserError(f"no usable tokenizer in {path} ({str(err).splitlines()[0]}); "
                            "the folder needs tokenizer.json or vocab.json + merges.txt") from err
        raise UserError(f"tokenizer {str(name_or_path)!r} is not available offline; {HOW_TO_GET_TOKENIZER}") from err
    if tok.pad_token is None:
        # RoBERTa's <pad> has id 1; a hand-made tokenizer may not declare it.
        for candidate in ("<pad>", "[PAD]"):
            if candidate in tok.get_vocab():
                tok.pad_token = candidate
                break
        else:
            raise UserError(f"tokenizer {name_or_path} has no padding token (<pad>)")
    return tok


def tokenize(tokenizer: Any, sentences: Sequence[str], normalize: bool = True,
             device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """-> (input_ids, attention_mask), int64 [B, L] padded to the longest sentence (pad id on the right)."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if not sentences:
        raise UserError("no sentence given; pass at least one referring expression")
    texts = [normalize_sentence(s) if normalize else s for s in sentences]
    enc = tokenizer(texts, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def find_tokenizer(tokenizer: Any, checkpoint: str | Path, default: str | Path) -> Any:
    """A loaded tokenizer: ``tokenizer`` itself if already loaded, else the folder it names, else one
    saved with the checkpoint (``<checkpoint>/tokenizer`` or the checkpoint folder itself, as the
    bundled models ship it), else ``default`` (the model config's; ``roberta-base`` from the offline
    Hugging Face cache)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    if tokenizer is not None:
        if not Path(tokenizer).is_dir():
            raise UserError(f"tokenizer folder not found: {tokenizer}")
        return load_tokenizer(tokenizer)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        for folder in (checkpoint / "tokenizer", checkpoint):
            if any((folder / f).is_file() for f in TOKENIZER_FILES):
                return load_tokenizer(folder)
    return load_tokenizer(default)
