"""RefVOS's text encoder: a ``transformers.BertModel`` and its weight files.

* :func:`build_bert` builds the random BERT of a :class:`~referformer.config.RefVOSConfig`;
* :func:`save_encoder_weights` / :func:`load_encoder_weights` write and read a ``BertModel`` state
  dict as safetensors (what the MLM step, :mod:`referformer.engine.text_mlm`, produces);
* :func:`load_bert_weights` starts a BERT from such a file or from a Hugging Face BERT found offline
  (``--text-encoder-init`` of the RefVOS recipes).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from referformer.config import RefVOSConfig
from referformer.errors import UserError

__all__ = ["build_bert", "load_bert_weights", "load_encoder_weights", "save_encoder_weights"]

# Keys of BertModel's pooler: absent from BertForMaskedLM.bert, so tolerated when missing/unexpected.
_POOLER_PREFIX = "pooler."


def build_bert(config: RefVOSConfig) -> nn.Module:
    """RefVOS's text encoder: a random ``transformers.BertModel`` of ``config.text_encoder``, without the
    pooler when ``sentence_embedding`` does not use it (so that no parameter is left without a gradient
    under DDP)."""
    from transformers import BertModel

    return BertModel(config.text_encoder.bert_config(), add_pooling_layer=config.sentence_embedding == "pooler")


def save_encoder_weights(encoder: nn.Module, path: str | Path) -> Path:
    """Write a ``BertModel``'s state dict (``embeddings.*``, ``encoder.*`` [, ``pooler.*``]) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "content": "bert-encoder"})
    return path


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load weights written by :func:`save_encoder_weights` into a ``BertModel``.

    Only the pooler may differ (an MLM model's encoder has none; RefVOS's has one only with
    ``sentence_embedding="pooler"``, and then keeps its own pooler when the file lacks it).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"BERT encoder weights not found at {path}; run the MLM step first or fix the path")
    state = load_file(str(path))
    own = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_POOLER_PREFIX)}
    result = encoder.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_POOLER_PREFIX)]
    if missing or result.unexpected_keys:
        raise UserError(f"{path} does not hold weights of this BERT: missing {missing[:5]}, "
                        f"unexpected {result.unexpected_keys[:5]} (was it saved from a different text config?)")


def load_bert_weights(encoder: nn.Module, source: str | Path) -> None:
    """Initialise a ``BertModel`` from a ``save_encoder_weights`` file (``.safetensors``) or a Hugging
    Face BERT (a local folder or a name in the offline cache, e.g. ``bert-base-uncased``)."""
    source_path = Path(source)
    if source_path.is_file():
        load_encoder_weights(encoder, source_path)
        return
    from transformers import BertModel

    with_pooler = getattr(encoder, "pooler", None) is not None
    try:
        pretrained = BertModel.from_pretrained(str(source), local_files_only=True, add_pooling_layer=with_pooler)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the BERT weights {str(source)!r} without downloading "
                        f"({error.__class__.__name__}); give a local folder or a .safetensors file") from None
    result = encoder.load_state_dict(pretrained.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{source} does not fit the model's BERT: missing {result.missing_keys[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]}")
