"""Sentences -> RoBERTa token ids, as the original inference does it.

The original inference (``inference_ytvos.py``) normalises each expression with
``" ".join(exp.lower().split())`` (lower case, collapsed whitespace) and tokenises with
``RobertaTokenizerFast.from_pretrained("roberta-base")``, ``padding="longest"``, no truncation.
The tokenizer comes from a directory given by the user or the local Hugging Face cache; a Hub name
missing from the cache is fetched once through ``huggingface_hub`` (its tokenizer files only) unless
downloads are off (:func:`offline_mode`), and the error then says what to run where.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from referformer.errors import UserError

HOW_TO_GET_TOKENIZER = ("on a connected machine run `huggingface-cli download roberta-base` (or `hf download "
                        "roberta-base`) and copy ~/.cache/huggingface (or $HF_HOME) to this machine, or run "
                        "`referformer download NAME` there (it saves the tokenizer in the model's folder), or pass "
                        "--tokenizer DIR (a folder with tokenizer.json or vocab.json + merges.txt)")
# Variables that turn every download off (set to 1 / true / yes / on).
OFFLINE_VARIABLES = ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# The files of a tokenizer on the Hub (RoBERTa's BPE files, BERT's vocab.txt, and config.json, which
# names the tokenizer class when tokenizer_config.json does not).
TOKENIZER_HUB_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
                       "special_tokens_map.json", "added_tokens.json", "config.json"]
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def offline_mode() -> bool:
    """True when downloads are off: ``REFERFORMER_OFFLINE``, ``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` is set to 1 / true / yes / on (``--offline`` sets the first)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def fetch_tokenizer(name: str) -> Path:
    """The folder of the Hub tokenizer ``name`` in the Hugging Face cache, fetched (tokenizer files
    only) when missing. ``UserError`` naming what to run where when offline or unreachable."""
    from huggingface_hub import snapshot_download

    offline = offline_mode()
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=TOKENIZER_HUB_FILES, local_files_only=offline))
    except (OSError, ValueError) as err:  # huggingface_hub's errors derive from these
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        why = ("downloads are off (REFERFORMER_OFFLINE / HF_HUB_OFFLINE)" if offline else
               f"fetching it from the Hugging Face Hub failed: {reason}")
        raise UserError(f"tokenizer {name!r} is not available offline and {why}; {HOW_TO_GET_TOKENIZER}") from err


def normalize_sentence(sentence: str) -> str:
    """Lower-case and collapse whitespace: ``" ".join(sentence.lower().split())``.

    What the original does to every sentence at inference (``inference_ytvos.py``) and to the
    Ref-YouTube-VOS, Ref-DAVIS, A2D, JHMDB and MeViS training sentences (RefCOCO sentences are used
    as stored, already lower-case and tokenised); the datasets import it as ``clean_caption``.
    """
    return " ".join(sentence.lower().split())


def load_tokenizer(name_or_path: str | Path = "roberta-base") -> Any:
    """A fast RoBERTa tokenizer from a local directory or the Hugging Face cache; a Hub name missing
    from the cache is fetched once (:func:`fetch_tokenizer`) unless downloads are off.

    Raises ``UserError`` with instructions when it is not available.
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
        if not _HUB_NAME.match(str(name_or_path)):
            raise UserError(f"tokenizer {str(name_or_path)!r} is not available offline (no such folder); "
                            f"{HOW_TO_GET_TOKENIZER}") from err
        return load_tokenizer(fetch_tokenizer(str(name_or_path)))
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


def find_tokenizer(tokenizer: Any, checkpoint: str | Path | None, default: str | Path) -> Any:
    """A loaded tokenizer: ``tokenizer`` itself if already loaded, else the folder it names, else one
    saved with the checkpoint (``<checkpoint>/tokenizer`` or the checkpoint folder itself, as the
    bundled models ship it), else ``default`` (the model's settings or text config name it: a folder
    relative to the checkpoint folder, a folder, or a Hugging Face name in the offline cache)."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    if tokenizer is not None:
        if not Path(tokenizer).is_dir():
            raise UserError(f"tokenizer folder not found: {tokenizer}")
        return load_tokenizer(tokenizer)
    folder = Path(checkpoint) if checkpoint is not None and Path(checkpoint).is_dir() else None
    if folder is None:
        return load_tokenizer(default)
    for candidate in (folder / str(default), folder / "tokenizer", folder):
        if any((candidate / f).is_file() for f in TOKENIZER_FILES):
            return load_tokenizer(candidate)
    try:
        return load_tokenizer(default)
    except UserError as err:
        if str(default) == "roberta-base":
            raise
        raise UserError(f"tokenizer {str(default)!r} is not available offline and the model folder {folder} holds "
                        f"none; put the tokenizer the model was trained with in {folder / 'tokenizer'} or pass "
                        "--tokenizer DIR") from err
