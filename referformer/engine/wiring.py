"""Wiring of the real ReferFormer model and datasets into the :class:`~referformer.engine.trainer.Trainer`.

``build_components(config, root, ...)`` returns the model factory, dataset, collate function,
forward function and criterion for a recipe. ``config.model`` picks the model: ``referformer`` (Hungarian set
criterion) or ``refvos`` (:mod:`referformer.models.refvos` with the cross-entropy of
:mod:`referformer.engine.refvos_loss`), on the same datasets and collate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from referformer.checkpoint import MODEL_TYPES  # the one registry of model names
from referformer.checkpoint.official import IGNORED_OFFICIAL_KEYS, official_to_ours
from referformer.config import RefVOSConfig
from referformer.data import build_dataset, collate_clips
from referformer.data.shared_clips import SharedClipSentences
from referformer.data.video_clips import VideoClipDataset
from referformer.engine.alignment import require_several_sentences
from referformer.engine.recipes import TrainConfig
from referformer.engine.refvos_loss import RefVOSCriterion
from referformer.engine.synthetic_tiny import (SAMPLES_PER_EPOCH, ResampledDataset, init_text_encoder,
                                              synthetic_model, synthetic_train_transforms)
from referformer.engine.trainer import CriterionFactory, ForwardFn, default_forward
from referformer.errors import UserError
from referformer.models import build_model
from referformer.models.bert import load_bert_weights
from referformer.models.deeplab import torchvision_deeplab_converter
from referformer.models.refvos import build_refvos
from referformer.presets import get_preset, release_config
from referformer.synthetic.refvos import refvos_synthetic_config
from referformer.synthetic.tokenizer import build_synthetic_tokenizer
from referformer.text import load_tokenizer

__all__ = ["TrainingComponents", "build_components", "official_key_converter", "ReferFormerCollate", "SharedClipCollate"]

# recipe dataset -> (names for referformer.data.build_dataset)
_DATASETS = {
    "ytvos": ("ytvos",),
    "a2d": ("a2d",),
    "mevis": ("mevis",),
    "refcoco": ("refcoco", "refcoco+", "refcocog"),  # the original --dataset_file all
    "joint": ("concat",),
    # "synthetic": referformer synth data + the synthetic-tiny model (_synthetic_components)
}


@dataclass
class TrainingComponents:
    model_factory: Callable[[], nn.Module]
    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any]
    forward: ForwardFn
    init_convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    # config -> loss module; None = the Trainer's default (ReferFormer's SetCriterion)
    criterion_factory: CriterionFactory | None = None


def official_key_converter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official checkpoint keys -> ours (``backbone.0.body.`` -> ``backbone.body.``, dropped buffers)."""

    return {official_to_ours(k): v for k, v in state.items() if k not in IGNORED_OFFICIAL_KEYS}


class ReferFormerCollate:
    """Samples ``(frames [T,3,H,W], target)`` -> ``(inputs, targets)`` for ``ReferFormer.forward``.

    Pads with :func:`referformer.data.collate_clips` (multiple of 32) and tokenises the captions as
    the original (``padding="longest"``); ``inputs`` holds ``frames``, ``padding_mask``,
    ``input_ids``, ``attention_mask``, ``image_sizes`` (``targets[i]["size"]``, used for the
    relative coordinates) and, for A2D / JHMDB targets, ``frame_indices`` (``valid_indices``).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: list[Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:

        batch = collate_clips(samples)
        return self.inputs(batch, batch.targets), batch.targets

    def inputs(self, batch: Any, sentence_targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Model inputs for the padded clips of ``batch`` (a :class:`referformer.data.VideoBatch`) and
        the captions of ``sentence_targets`` (one per clip, or more with ``clip_index``)."""
        tokens = self.tokenizer([t["caption"] for t in sentence_targets], padding="longest", return_tensors="pt")
        inputs = {
            "frames": batch.frames,
            "padding_mask": batch.padding_mask,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "image_sizes": torch.stack([torch.as_tensor(t["size"]) for t in batch.targets]),
        }
        if all("valid_indices" in t for t in batch.targets):
            # A2D / JHMDB: the original decodes only the annotated frames, selected after the backbone
            inputs["frame_indices"] = torch.stack([torch.as_tensor(t["valid_indices"]).long()
                                                   for t in batch.targets])
        return inputs


class SharedClipCollate(ReferFormerCollate):
    """Items of :class:`referformer.data.shared_clips.SharedClipSentences` ``(frames, [targets])`` ->
    ``(inputs, targets)``: ``frames`` / ``padding_mask`` / ``image_sizes`` hold each clip once,
    ``input_ids`` / ``attention_mask`` one row per sentence, ``clip_index`` [s] the clip of each
    sentence (``ReferFormer.forward(clip_index=...)``); ``targets`` one per sentence."""

    def __call__(self, samples: list[Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:

        batch = collate_clips([(frames, targets[0]) for frames, targets in samples])
        targets = [t for _, clip_targets in samples for t in clip_targets]
        inputs = self.inputs(batch, targets)
        inputs["clip_index"] = torch.tensor([c for c, (_, ts) in enumerate(samples) for _ in ts], dtype=torch.long)
        return inputs, targets


def _synthetic_components(
    config: TrainConfig, root: str | Path | None, tokenizer: str | None, dataset_options: dict[str, Any] | None
) -> TrainingComponents:
    """The synthetic benchmark (``referformer synth`` layout) with the recipe's model (``synthetic-tiny``,
    ``synthetic-tiny-v2``: :func:`referformer.engine.synthetic_tiny.synthetic_model`; or ``config.model_preset``),
    its tokenizer (default: the synthetic one) and the native-size transform."""

    dataset = _synthetic_train_dataset(config, root, dataset_options)
    spec = synthetic_model(config.name)
    model_config = _referformer_config(config, spec.config)

    def model_factory() -> nn.Module:
        model = build_model(model_config)
        # synthetic-tiny: larger initial text weights (init_text_encoder); -v2: the pretrained parts
        return model if config.model_preset else spec.initialise(model)

    tokenizer = tokenizer or (spec.tokenizer() if spec.tokenizer is not None else None)
    return TrainingComponents(
        model_factory=model_factory,
        dataset=dataset,
        collate_fn=_collate(config, load_tokenizer(_synthetic_tokenizer_dir(tokenizer))),
        forward=_referformer_forward(config),
        init_convert=official_key_converter,
    )


def _referformer_config(config: TrainConfig, default: Callable[[], Any]) -> Any:
    """The ReferFormer ``ModelConfig`` of a recipe: its ``model_preset`` (else ``default()``) with the
    recipe's text-encoder freezing, auxiliary losses, decoder depth and class count."""

    model_config = get_preset(config.model_preset).config if config.model_preset else default()
    return model_config.replace(
        freeze_text_encoder=config.freeze_text_encoder,
        aux_loss=config.aux_loss,
        dec_layers=config.num_decoder_layers,
        num_classes=1 if config.binary else model_config.num_classes,
    )


def _referformer_forward(config: TrainConfig) -> ForwardFn:
    """``model(**inputs)``; with the alignment term (``loss_weights.loss_align``) the model also returns the
    features it needs, which only exist with several sentences per clip."""

    if not config.loss_weights.loss_align:
        return default_forward
    require_several_sentences(config.sentences_per_clip)

    def forward(model: nn.Module, inputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
        return model(**inputs, return_features=True)

    return forward


def _collate(config: TrainConfig, tokenizer: Any) -> ReferFormerCollate:
    return SharedClipCollate(tokenizer) if config.sentences_per_clip > 1 else ReferFormerCollate(tokenizer)


# ---- RefVOS ----------------------------------------------------------------------------------------
def _synthetic_train_dataset(config: TrainConfig, root: str | Path | None,
                             dataset_options: dict[str, Any] | None) -> Dataset:
    """The training split of a ``referformer synth`` dataset as the synthetic recipes use it: native
    size (synthetic transforms), ``SAMPLES_PER_EPOCH`` random clips an epoch (``samples_per_epoch`` in
    ``dataset_options`` changes it, 0 = every expression once), shared clips when
    ``config.sentences_per_clip > 1``."""
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the synthetic dataset folder (referformer synth --out DATA): "
                        "give --root DATA")

    options = {"num_frames": config.num_frames, "categories": None,
               "transforms": synthetic_train_transforms(), **(dataset_options or {})}
    samples_per_epoch = options.pop("samples_per_epoch", SAMPLES_PER_EPOCH)
    dataset = build_dataset("ytvos", root, "train", **options)
    if config.sentences_per_clip > 1:
        dataset = SharedClipSentences(dataset, config.sentences_per_clip)
    return ResampledDataset(dataset, samples_per_epoch) if samples_per_epoch else dataset


def _synthetic_tokenizer_dir(tokenizer: str | None) -> str:
    """``tokenizer`` or, when None, the (deterministic) synthetic tokenizer written to a temporary folder."""
    if tokenizer is not None:
        return tokenizer
    import tempfile


    return str(build_synthetic_tokenizer(Path(tempfile.mkdtemp(prefix="referformer-tokenizer-"))))


def _train_dataset(config: TrainConfig, root: str | Path | None, dataset_options: dict[str, Any] | None) -> Dataset:
    """The training dataset of a real benchmark (``_DATASETS``), shared clips when asked."""
    if config.dataset not in _DATASETS:
        raise UserError(f"recipe {config.name!r}: unknown dataset {config.dataset!r}")
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the dataset folder: give --root DATA")

    options = {"num_frames": config.num_frames, "max_size": config.max_size, **(dataset_options or {})}
    parts = [build_dataset(name, root, "train", **options) for name in _DATASETS[config.dataset]]
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if config.sentences_per_clip > 1:
        if not isinstance(dataset, VideoClipDataset):
            raise UserError(f"sentences_per_clip > 1 needs a video dataset (ytvos, mevis), not {config.dataset!r}")
        dataset = SharedClipSentences(dataset, config.sentences_per_clip)
    return dataset


def _refvos_criterion(config: TrainConfig) -> nn.Module:

    return RefVOSCriterion(class_weights=config.class_weights)


def _refvos_components(
    config: TrainConfig, root: str | Path | None, tokenizer: str | None, dataset_options: dict[str, Any] | None
) -> TrainingComponents:
    """RefVOS on ``config.dataset``: the model of ``config.model_preset`` (default ``refvos-r101``; on
    synthetic data :func:`referformer.synthetic.refvos.refvos_synthetic_config` with a from-scratch BERT),
    the ReferFormer collate (BERT gets zero token types) and :class:`RefVOSCriterion`."""

    synthetic = config.dataset == "synthetic"
    if config.model_preset:
        model_config = get_preset(config.model_preset).config
    else:
        model_config = refvos_synthetic_config() if synthetic else get_preset("refvos-r101").config
    if not isinstance(model_config, RefVOSConfig):
        raise UserError(f"recipe {config.name!r} trains RefVOS but preset {config.model_preset!r} is not a RefVOS "
                        "model; pick refvos-r101 or refvos-tiny (see `referformer presets`)")
    model_config = model_config.replace(freeze_text_encoder=config.freeze_text_encoder)
    if synthetic:
        dataset = _synthetic_train_dataset(config, root, dataset_options)
        tokenizer_name = _synthetic_tokenizer_dir(tokenizer)
    else:
        dataset = _train_dataset(config, root, dataset_options)
        tokenizer_name = tokenizer or model_config.text_encoder.tokenizer

    def model_factory() -> nn.Module:
        model = build_refvos(model_config)
        if config.text_encoder_init:  # bert-base-uncased, or the MLM step's output (referformer.engine.text_mlm)

            load_bert_weights(model.text_encoder, config.text_encoder_init)
        elif synthetic and not config.model_preset:
            # a BERT trained from scratch at width 64: the [CLS] state must mix the sentence from the
            # first step (see referformer.engine.synthetic_tiny.init_text_encoder)

            init_text_encoder(model)
        return model

    return TrainingComponents(
        model_factory=model_factory,
        dataset=dataset,
        collate_fn=_collate(config, load_tokenizer(tokenizer_name)),
        forward=default_forward,
        init_convert=torchvision_deeplab_converter,  # our key names are torchvision's DeepLabv3's
        criterion_factory=_refvos_criterion,
    )


def build_components(
    config: TrainConfig, root: str | Path | None, tokenizer: str | None = None, dataset_options: dict[str, Any] | None = None
) -> TrainingComponents:
    """Model factory, training dataset, collate, forward and criterion functions for ``config``."""

    if config.model not in MODEL_TYPES:
        raise UserError(f"recipe {config.name!r}: unknown model {config.model!r}; choose one of {', '.join(MODEL_TYPES)}")
    if config.model == "refvos":
        return _refvos_components(config, root, tokenizer, dataset_options)
    if config.model == "propagator":  # the mask propagator: its own data, loss and network
        from referformer.engine.propagation_training import propagator_components

        return TrainingComponents(**propagator_components(config, root, dataset_options))
    if config.model == "tracklets":  # the top-down tracklet-grounding system: F_Seg or F_Gnd
        from referformer.engine.tracklets_training import tracklets_components

        return TrainingComponents(**tracklets_components(config, root, tokenizer, dataset_options))
    if config.text_encoder_init or config.class_weights:
        raise UserError("--text-encoder-init and --class-weights are RefVOS options; ReferFormer takes its RoBERTa "
                        "weights from --init and its loss weights from the recipe")
    if config.dataset == "synthetic":
        return _synthetic_components(config, root, tokenizer, dataset_options)
    dataset = _train_dataset(config, root, dataset_options)

    model_config = _referformer_config(config, lambda: release_config("resnet50"))
    tokenizer_name = tokenizer or model_config.text_encoder.tokenizer
    return TrainingComponents(
        model_factory=lambda: build_model(model_config),
        dataset=dataset,
        collate_fn=_collate(config, load_tokenizer(tokenizer_name)),
        forward=_referformer_forward(config),
        init_convert=official_key_converter,
    )
