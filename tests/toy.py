"""A tiny stand-in model and synthetic referring clips for exercising the training machinery (tests only).

Not ReferFormer: the model only has the same output contract (``pred_logits``, ``pred_boxes``,
``pred_masks`` at stride 4, ``aux_outputs``) and parameter names that exercise the optimizer
groups (``backbone.0``, ``text_encoder``, ``sampling_offsets``). ``toy_recipe()`` is its training
config, ``toy_trainer()`` a :class:`~referformer.engine.trainer.Trainer` on it. Run as a script it
trains the stand-in, for the ``torchrun`` tests (devices, processes, resume without data)::

    torchrun --standalone --nproc_per_node 2 tests/toy.py --out RUN --batch-size 1 --max-steps 3
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from referformer.engine.optim import OptimizerConfig
from referformer.engine.recipes import TrainConfig
from referformer.engine.trainer import Trainer

__all__ = ["ToyClips", "ToyReferModel", "toy_collate", "toy_recipe", "toy_trainer"]


class ToyClips(Dataset):
    """Clips of a bright square moving over noise; the square is the referred object.

    Each item: ``(frames [T, 3, H, W] float, target)`` with the dataset target contract (``masks``
    ``[T, H, W]`` bool, ``boxes`` ``[T, 4]`` normalised cxcywh, ``valid``, ``labels``). The square
    leaves the frame on the last frame of every third clip (invisible frame: zero box, valid 0).
    A random horizontal flip drawn with python's ``random`` stands for data augmentation.
    """

    def __init__(self, num_clips: int = 8, num_frames: int = 2, size: tuple[int, int] = (32, 32)) -> None:
        self.num_clips = num_clips
        self.num_frames = num_frames
        self.size = size

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        height, width = self.size
        generator = torch.Generator().manual_seed(index)
        frames = 0.2 * torch.rand(self.num_frames, 3, height, width, generator=generator)
        masks = torch.zeros(self.num_frames, height, width, dtype=torch.bool)
        side = height // 4
        y0 = int(torch.randint(0, height - side, (1,), generator=generator))
        x0 = int(torch.randint(0, width - side - self.num_frames, (1,), generator=generator))
        for t in range(self.num_frames):
            if index % 3 == 2 and t == self.num_frames - 1:
                continue  # object absent
            masks[t, y0 : y0 + side, x0 + t : x0 + t + side] = True
        frames[:, :, :, :] += masks[:, None].float()
        if random.random() < 0.5:
            frames, masks = frames.flip(-1), masks.flip(-1)
        boxes = torch.zeros(self.num_frames, 4)
        valid = masks.flatten(1).any(1)
        for t in range(self.num_frames):
            if valid[t]:
                rows = masks[t].any(1).nonzero().flatten()
                cols = masks[t].any(0).nonzero().flatten()
                x1, x2, y1, y2 = cols[0], cols[-1], rows[0], rows[-1]
                boxes[t] = torch.tensor(
                    [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
                )
        target = {
            "masks": masks,
            "boxes": boxes,
            "valid": valid.to(torch.int32),
            "labels": torch.zeros(self.num_frames, dtype=torch.int64),
        }
        return frames, target


def toy_collate(samples: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """``[(frames, target)]`` -> ``({"frames": [B, T, 3, H, W]}, [target, ...])``."""
    frames = torch.stack([frames for frames, _ in samples])
    return {"frames": frames}, [target for _, target in samples]


class ToyReferModel(nn.Module):
    """Per-frame conv features at stride 4 and Q learned queries, one head set per "decoder layer"."""

    def __init__(self, num_queries: int = 3, num_layers: int = 2, hidden: int = 16, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 4, stride=4))]
        )
        self.text_encoder = nn.Linear(hidden, hidden)  # stands for RoBERTa (frozen by the recipes)
        self.query_embed = nn.Embedding(num_queries, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.sampling_offsets = nn.Linear(hidden, hidden)
        self.class_embed = nn.ModuleList(nn.Linear(hidden, num_classes) for _ in range(num_layers))
        self.bbox_embed = nn.ModuleList(nn.Linear(hidden, 4) for _ in range(num_layers))
        self.mask_embed = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.activation_checkpointing = False

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.activation_checkpointing = enabled

    def forward(self, frames: torch.Tensor) -> dict[str, Any]:
        """frames ``[B, T, 3, H, W]`` -> the ReferFormer output dict (masks ``[B, T, Q, H/4, W/4]``)."""
        batch, num_frames = frames.shape[:2]
        flat = frames.flatten(0, 1)
        if self.activation_checkpointing and self.training:
            features = torch.utils.checkpoint.checkpoint(self.backbone[0], flat, use_reentrant=False)
        else:
            features = self.backbone[0](flat)  # [BT, C, h, w]
        pooled = features.mean((2, 3))  # [BT, C]
        queries = self.query_embed.weight[None] + self.sampling_offsets(pooled)[:, None]  # [BT, Q, C]
        layer_outputs = []
        for layer, cls, box, mask in zip(self.layers, self.class_embed, self.bbox_embed, self.mask_embed):
            queries = queries + F.relu(layer(queries))
            masks = torch.einsum("nqc,nchw->nqhw", mask(queries), features)
            layer_outputs.append(
                {
                    "pred_logits": cls(queries).unflatten(0, (batch, num_frames)),
                    "pred_boxes": box(queries).sigmoid().unflatten(0, (batch, num_frames)),
                    "pred_masks": masks.unflatten(0, (batch, num_frames)),
                }
            )
        outputs = dict(layer_outputs[-1])
        outputs["aux_outputs"] = layer_outputs[:-1]
        return outputs


def toy_recipe(**changes: Any) -> TrainConfig:
    """The stand-in's training config (2 epochs of 8 clips of 2 frames, batch 2; ``changes`` as in
    :meth:`TrainConfig.replace`)."""
    config = TrainConfig(
        name="toy",
        description="Tiny stand-in model on synthetic clips: checks the training machinery (devices, torchrun)",
        dataset="toy",
        epochs=2,
        optimizer=OptimizerConfig(lr_drop=(1,)),
        num_frames=2,
        batch_size=2,
        num_workers=0,
        num_decoder_layers=2,
        freeze_text_encoder=True,
    )
    return config.replace(**changes)


def toy_trainer(config: TrainConfig, out_dir: str | Path, **kwargs: Any) -> Trainer:
    """A Trainer of :class:`ToyReferModel` on 8 :class:`ToyClips` (``kwargs`` go to the Trainer)."""
    return Trainer(
        config,
        lambda: ToyReferModel(num_layers=config.num_decoder_layers),
        ToyClips(num_clips=8, num_frames=config.num_frames),
        out_dir,
        toy_collate,
        **{"show_progress": False, **kwargs},
    )


def main(argv: list[str] | None = None) -> int:
    """Train the stand-in on CPU in fp32 (one process, or one per ``torchrun`` worker)."""
    parser = argparse.ArgumentParser(description="train the toy stand-in (tests/toy.py)")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per process")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all epochs)")
    args = parser.parse_args(argv)
    config = toy_recipe(device="cpu", precision="fp32", batch_size=args.batch_size, max_steps=args.max_steps)
    toy_trainer(config, args.out).fit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
