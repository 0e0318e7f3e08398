"""Training the mask propagator: data, loss and the pieces ``engine.wiring`` hands the trainer.

``referformer train --recipe propagator-tiny --root DATA`` (the synthetic benchmark, native size,
CPU) or ``--recipe propagator --root DATA`` (any Ref-YouTube-VOS / YouTube-VOS / DAVIS-2017 layout,
random 384-pixel crops, GPU) trains a :class:`~referformer.models.propagation.SpaceTimeMemoryNet`
as STM does: clips of ``num_frames`` (3) annotated frames a random 1..``MAX_SKIP`` apart, the first
frame's objects given (up to ``MAX_OBJECTS``), each later frame predicted from the memory of the
frames before it (predicted probabilities, not the ground truth), and the loss
(:class:`PropagationCriterion`) on the predicted frames. Export the run with
:func:`export_propagator` (a ``save_pretrained`` folder that ``--propagator`` accepts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from referformer.checkpoint.pretrained import export_training_checkpoint
from referformer.data.vos import VOSClipDataset, collate_vos_clips, read_vos_split
from referformer.engine.criterion import weighted_total
from referformer.engine.recipes import TrainConfig
from referformer.engine.trainer import default_forward
from referformer.errors import UserError
from referformer.models.propagation import PropagatorConfig, build_propagator, propagator_preset

__all__ = ["MAX_OBJECTS", "MAX_SKIP", "PropagationCriterion", "export_propagator", "propagator_components",
           "propagator_config"]

MAX_OBJECTS = 3  # objects per training clip (STM trains with up to 3)
MAX_SKIP = 5  # largest gap between consecutive frames of a clip, in annotated frames


class PropagationCriterion(nn.Module):
    """Cross-entropy over ``[background, object 1 .. K]`` plus a soft Dice term per object.

    ``forward(outputs, targets)``: outputs ``logits`` ``[B, T - 1, K + 1, H, W]`` (aggregated, the
    predicted frames 1 .. T - 1); targets per clip ``masks`` bool ``[T, K, H, W]`` (exclusive) and
    ``valid`` ``[K]``. Returns the unweighted terms ``loss_ce`` (mean over pixels) and ``loss_dice``
    (``1 - (2 |P G| + 1) / (|P| + |G| + 1)`` per valid object and frame, averaged).
    """

    def __init__(self, weight_ce: float = 1.0, weight_dice: float = 1.0) -> None:
        super().__init__()
        self.weight_dict = {"loss_ce": float(weight_ce), "loss_dice": float(weight_dice)}

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(losses, self.weight_dict)

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        logits = outputs["logits"].float()
        masks = torch.stack([t["masks"] for t in targets])[:, 1:].float()  # [B, T-1, K, H, W]
        valid = torch.stack([t["valid"] for t in targets]).float()  # [B, K]
        labels = torch.where(masks.any(2), masks.argmax(2) + 1, torch.zeros_like(masks[:, :, 0], dtype=torch.long))
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1).long())
        probs = torch.softmax(logits, dim=2)[:, :, 1:]
        inter = (probs * masks).sum((-2, -1))
        dice = 1 - (2 * inter + 1) / (probs.sum((-2, -1)) + masks.sum((-2, -1)) + 1)  # [B, T-1, K]
        weights = valid[:, None].expand_as(dice)
        return {"loss_ce": ce, "loss_dice": (dice * weights).sum() / weights.sum().clamp(min=1)}


def propagator_config(config: TrainConfig) -> PropagatorConfig:
    """The network of a recipe: its ``model_preset`` (a :data:`PROPAGATOR_PRESETS` name), else
    ``propagator-tiny`` on the synthetic benchmark and ``propagator-r18`` elsewhere."""
    default = "propagator-tiny" if config.dataset == "synthetic" else "propagator-r18"
    return propagator_preset(config.model_preset or default)


def propagator_components(config: TrainConfig, root: str | Path | None,
                          dataset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``engine.wiring.TrainingComponents`` for a propagator recipe.

    ``config.dataset``: ``synthetic`` (no crop; native size, or short side ``config.short_side``)
    or a layout of :func:`referformer.data.vos.read_vos_split` (``vos``, ``ytvos``, ``davis``: crops
    of ``config.max_size`` pixels). ``dataset_options`` go to :class:`VOSClipDataset` (``max_skip``,
    ``max_objects``, ``crop``, ``flip``, ``short_side``) and may name the ``split`` (default ``train``).
    """
    if root is None:
        raise UserError(f"recipe {config.name!r} needs the dataset folder: give --root DATA (a "
                        "YouTube-VOS / DAVIS-2017 / `referformer synth` layout, see docs/propagation.md)")
    options = dict(dataset_options or {})
    split = options.pop("split", "train")
    layout = "synthetic" if config.dataset == "synthetic" else config.dataset
    videos = read_vos_split(root, split, layout)
    options.setdefault("crop", None if config.dataset == "synthetic" else config.max_size)
    if options["crop"] is None:
        options.setdefault("short_side", config.short_side)
    options.setdefault("max_skip", MAX_SKIP)
    options.setdefault("max_objects", MAX_OBJECTS)
    dataset = VOSClipDataset(videos, num_frames=config.num_frames, **options)
    if config.num_frames < 2:
        raise UserError("a propagator trains on clips of at least 2 frames (--num-frames)")
    model_config = propagator_config(config)
    return {
        "model_factory": lambda: build_propagator(model_config),
        "dataset": dataset,
        "collate_fn": collate_vos_clips,
        "forward": default_forward,
        "init_convert": None,
        "criterion_factory": lambda _config: PropagationCriterion(),
    }


def export_propagator(checkpoint: str | Path, directory: str | Path, config: TrainConfig | PropagatorConfig,
                      *, half: bool = False, metadata: dict[str, Any] | None = None) -> Path:
    """A training run's ``last.pth`` -> a model folder for ``--propagator`` (fp16 weights with
    ``half``). ``config``: the run's recipe (its network) or the network's config."""
    network = config if isinstance(config, PropagatorConfig) else propagator_config(config)
    return export_training_checkpoint(checkpoint, network, directory, metadata=metadata, half=half)
