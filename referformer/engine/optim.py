"""Optimiser and learning-rate schedule of the original ``main.py``.

AdamW over four parameter groups chosen by **substring** of the parameter name (the original
``match_name_keywords``), in the original order:

* ``rest``: names containing none of the keywords below, ``lr`` (1e-4);
* ``backbone``: ``backbone.0`` (original naming) or ``backbone.body`` (ours), ``lr_backbone`` (5e-5);
* ``text_encoder``: ``text_encoder``, ``lr_text_encoder`` (1e-5);
* ``linear_proj``: ``reference_points`` or ``sampling_offsets``, ``lr * lr_linear_proj_mult`` (1.0).

Parameters with ``requires_grad=False`` (the frozen text encoder) are left out. A parameter
matching several keyword lists is put in the first matching of backbone / text encoder / linear
projection (the original would put it in two groups, which AdamW rejects; no official name does
that). Weight decay 5e-4 for every group; ``MultiStepLR(milestones=lr_drop, gamma=0.1)`` stepped
once per epoch. Our model's parameter names are the official state-dict keys (``backbone.body`` for
``backbone.0.body``), so the groups are the original's: tests/test_training_claims.py applies the
original's keyword rule to the official key names of ``../shared/reference/model/keys_*.tsv``.
Our option: ``fused`` (the fused AdamW kernel, on by default on GPU) gives the same update up to
rounding; ``fused=False`` is torch's default implementation, as in the original.

The keyword lists are per model: :data:`PARAMETER_NAMES` holds them for every model name of
``TrainConfig.model`` and :func:`optimizer_names` gives the ``OptimizerConfig`` fields of one (RefVOS's
torchvision-named ResNet is ``backbone.conv1`` / ``backbone.bn1`` / ``backbone.layer*``; its BERT is
``text_encoder.*``; ASPP, classifier and text projection fall in ``rest``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PARAMETER_NAMES", "OptimizerConfig", "build_param_groups", "build_optimizer", "build_scheduler",
           "optimizer_names"]

# model name (TrainConfig.model) -> parameter-name keywords of its optimizer groups
PARAMETER_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "referformer": {
        "backbone_names": ("backbone.0", "backbone.body"),
        "text_encoder_names": ("text_encoder",),
        "linear_proj_names": ("reference_points", "sampling_offsets"),
    },
    "refvos": {
        "backbone_names": ("backbone.conv1", "backbone.bn1", "backbone.layer"),
        "text_encoder_names": ("text_encoder",),
        "linear_proj_names": (),
    },
}


def optimizer_names(model: str) -> dict[str, tuple[str, ...]]:
    """The ``OptimizerConfig`` keyword fields (``backbone_names`` ...) of model ``model``."""
    if model not in PARAMETER_NAMES:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(PARAMETER_NAMES)}")
    return dict(PARAMETER_NAMES[model])


@dataclass(frozen=True)
class OptimizerConfig:
    """Learning rates and their parameter-name keywords (original ``opts.py`` defaults)."""

    lr: float = 1e-4
    lr_backbone: float = 5e-5
    lr_text_encoder: float = 1e-5
    lr_linear_proj_mult: float = 1.0
    weight_decay: float = 5e-4
    lr_drop: tuple[int, ...] = (6, 8)
    lr_gamma: float = 0.1
    backbone_names: tuple[str, ...] = ("backbone.0", "backbone.body")
    text_encoder_names: tuple[str, ...] = ("text_encoder",)
    linear_proj_names: tuple[str, ...] = ("reference_points", "sampling_offsets")
    # torch's fused AdamW kernel (one launch for all parameters; same update up to rounding):
    # None = on when every parameter is on a GPU, True / False to force it
    fused: bool | None = None


def _matches(name: str, keywords: Sequence[str]) -> bool:
    return any(keyword in name for keyword in keywords)


def build_param_groups(model: nn.Module, config: OptimizerConfig) -> list[dict]:
    """Named AdamW parameter groups (empty groups dropped), each with ``name`` and ``lr``."""
    groups: dict[str, list[nn.Parameter]] = {"rest": [], "backbone": [], "text_encoder": [], "linear_proj": []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if _matches(name, config.backbone_names):
            groups["backbone"].append(parameter)
        elif _matches(name, config.text_encoder_names):
            groups["text_encoder"].append(parameter)
        elif _matches(name, config.linear_proj_names):
            groups["linear_proj"].append(parameter)
        else:
            groups["rest"].append(parameter)
    rates = {
        "rest": config.lr,
        "backbone": config.lr_backbone,
        "text_encoder": config.lr_text_encoder,
        "linear_proj": config.lr * config.lr_linear_proj_mult,
    }
    return [{"name": name, "params": params, "lr": rates[name]} for name, params in groups.items() if params]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW with the groups of :func:`build_param_groups` and ``weight_decay``; fused per ``config.fused``
    (build it after the model is on its device)."""
    groups = build_param_groups(model, config)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    fused = config.fused
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimizerConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """``MultiStepLR(milestones=lr_drop, gamma)``; call ``step()`` once at the end of every epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_drop), gamma=config.lr_gamma)
