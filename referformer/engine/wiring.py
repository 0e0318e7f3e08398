"""Wiring of the real ReferFormer model and datasets into the :class:`~referformer.engine.trainer.Trainer`.

``build_components(config, root, ...)`` returns the model factory, dataset, collate function and
forward function for a recipe; the ``toy`` recipe uses the stand-in of :mod:`referformer.engine.toy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from referformer.engine.recipes import TrainConfig
from referformer.engine.trainer import ForwardFn, default_forward
from referformer.errors import UserError

__all__ = ["TrainingComponents", "build_components", "official_key_converter", "ReferFormerCollate"]

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


def official_key_converter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official checkpoint keys -> ours (``backbone.0.body.`` -> ``backbone.body.``, dropped buffers)."""
    from referformer.checkpoint import IGNORED_OFFICIAL_KEYS, official_to_ours

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
        from referformer.data import collate_clips

        batch = collate_clips(samples)
        tokens = self.tokenizer([t["caption"] for t in batch.targets], padding="longest", return_tensors="pt")
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
        return inputs, batch.targets


def _load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load the RoBERTa tokenizer {name_or_path!r} without downloading ({error.__class__.__name__}); "
            "give a local Hugging Face tokenizer folder with --tokenizer DIR"
        ) from None


def _synthetic_components(
    config: TrainConfig, root: str | Path | None, tokenizer: str | None, dataset_options: dict[str, Any] | None
) -> TrainingComponents:
    """The synthetic benchmark (``referformer synth`` layout) with the ``synthetic-tiny`` model
    (or ``config.model_preset``), the synthetic tokenizer and the native-size transform."""
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the synthetic dataset folder (referformer synth --out DATA): "
                        "give --root DATA")
    import tempfile

    from referformer.data import build_dataset
    from referformer.models import build_model
    from referformer.presets import get_preset
    from referformer.synthetic.model import (SAMPLES_PER_EPOCH, ResampledDataset, init_text_encoder,
                                             synthetic_tiny_config, synthetic_train_transforms)
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer

    model_config = get_preset(config.model_preset).config if config.model_preset else synthetic_tiny_config()
    model_config = model_config.replace(
        freeze_text_encoder=config.freeze_text_encoder, aux_loss=config.aux_loss,
        dec_layers=config.num_decoder_layers, num_classes=1 if config.binary else model_config.num_classes)
    options = {"num_frames": config.num_frames, "categories": None,
               "transforms": synthetic_train_transforms(), **(dataset_options or {})}
    samples_per_epoch = options.pop("samples_per_epoch", SAMPLES_PER_EPOCH)
    dataset = build_dataset("ytvos", root, "train", **options)
    if samples_per_epoch:
        dataset = ResampledDataset(dataset, samples_per_epoch)
    if tokenizer is None:  # the synthetic tokenizer is deterministic: write it where AutoTokenizer reads it
        tokenizer = str(build_synthetic_tokenizer(Path(tempfile.mkdtemp(prefix="referformer-tokenizer-"))))

    def model_factory() -> nn.Module:
        model = build_model(model_config)
        # synthetic-tiny's text encoder is trained from scratch: larger initial weights (init_text_encoder)
        return model if config.model_preset else init_text_encoder(model)

    return TrainingComponents(
        model_factory=model_factory,
        dataset=dataset,
        collate_fn=ReferFormerCollate(_load_tokenizer(tokenizer)),
        forward=default_forward,
        init_convert=official_key_converter,
    )


def build_components(
    config: TrainConfig, root: str | Path | None, tokenizer: str | None = None, dataset_options: dict[str, Any] | None = None
) -> TrainingComponents:
    """Model factory, training dataset, collate and forward functions for ``config``."""
    if config.dataset == "toy":
        from referformer.engine.toy import ToyClips, ToyReferModel, toy_collate

        return TrainingComponents(
            model_factory=lambda: ToyReferModel(num_layers=config.num_decoder_layers),
            dataset=ToyClips(num_clips=8, num_frames=config.num_frames),
            collate_fn=toy_collate,
            forward=default_forward,
        )
    if config.dataset == "synthetic":
        return _synthetic_components(config, root, tokenizer, dataset_options)
    if config.dataset not in _DATASETS:
        raise UserError(f"recipe {config.name!r}: unknown dataset {config.dataset!r}")
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the dataset folder: give --root DATA")
    from referformer.data import build_dataset
    from referformer.models import build_model
    from referformer.presets import get_preset, release_config

    model_config = get_preset(config.model_preset).config if config.model_preset else release_config("resnet50")
    model_config = model_config.replace(
        freeze_text_encoder=config.freeze_text_encoder,
        aux_loss=config.aux_loss,
        dec_layers=config.num_decoder_layers,
        num_classes=1 if config.binary else model_config.num_classes,
    )
    options = {"num_frames": config.num_frames, "max_size": config.max_size, **(dataset_options or {})}
    parts = [build_dataset(name, root, "train", **options) for name in _DATASETS[config.dataset]]
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    tokenizer_name = tokenizer or model_config.text_encoder.tokenizer
    return TrainingComponents(
        model_factory=lambda: build_model(model_config),
        dataset=dataset,
        collate_fn=ReferFormerCollate(_load_tokenizer(tokenizer_name)),
        forward=default_forward,
        init_convert=official_key_converter,
    )
