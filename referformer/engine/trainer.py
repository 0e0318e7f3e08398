"""The training loop.

:class:`Trainer` takes a model factory, a dataset and a collate function, so wiring a new model or
dataset is one call; it handles DistributedDataParallel (``torchrun``), autocast (bf16/fp16 with a
GradScaler for fp16), gradient accumulation and clipping, per-rank seeding, logging (CSV, tqdm,
TensorBoard when installed), periodic atomic checkpoints and exact resume.

Batch contract: ``collate_fn(samples) -> (inputs, targets)``; ``forward(model, inputs, targets)``
returns the ReferFormer output dict (default: ``model(**inputs)``); ``targets`` is the list of
per-clip dicts the criterion reads (:mod:`referformer.engine.targets`). The criterion comes from
``criterion_factory(config)`` (default: ReferFormer's :class:`SetCriterion`; RefVOS's cross-entropy
through :mod:`referformer.engine.wiring`). Tensors anywhere in
``inputs``/``targets`` (and objects with a ``.to(device)``) are moved to the device.

Resume is exact: the checkpoint stores model, optimizer, scheduler, scaler, the position in the
epoch and every rank's RNG states, the sampler order depends only on ``(seed, epoch)``, each
sample's augmentation only on ``(seed, epoch, index)`` (:class:`~referformer.data.seeding.SeededDataset`),
and the DataLoader has its own generator, so the steps after a resume are the steps an
uninterrupted run would have taken.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from referformer.data.seeding import SeededDataset, seed_everything
from referformer.engine import distributed
from referformer.engine.checkpointing import (
    CHECKPOINT_FORMAT,
    Progress,
    capture_rng_state,
    load_initial_weights,
    load_training_checkpoint,
    restore_rng_state,
    save_atomic,
)
from referformer.engine.criterion import SetCriterion, weighted_total
from referformer.engine.matcher import HungarianMatcher
from referformer.engine.optim import build_optimizer, build_scheduler
from referformer.engine.recipes import TrainConfig
from referformer.engine.train_log import TrainingLog
from referformer.errors import UserError

__all__ = ["Trainer", "build_set_criterion", "default_forward", "move_to_device", "resolve_precision",
           "LAST_CHECKPOINT"]

LAST_CHECKPOINT = "last.pth"
ForwardFn = Callable[[nn.Module, Any, list[dict[str, Any]]], dict[str, Any]]
# config -> loss module: ``criterion(outputs, targets) -> {name: unweighted term}``, ``.total(terms)``
# (weighted sum) and ``.weight_dict`` (what the logged ``loss`` weighs the terms with)
CriterionFactory = Callable[[TrainConfig], nn.Module]
StepCallback = Callable[[Progress, dict[str, float]], None]


def default_forward(model: nn.Module, inputs: Any, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """``model(**inputs)`` for dict inputs, ``model(inputs)`` otherwise."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (and objects with ``.to``) inside dicts/lists/tuples moved to ``device``; the rest kept."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {key: move_to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(value, device) for value in obj)
    if hasattr(obj, "to") and not isinstance(obj, (str, bytes)):
        return obj.to(device)
    return obj


def build_set_criterion(config: TrainConfig) -> SetCriterion:
    """ReferFormer's loss (Hungarian matching + set losses) as ``config`` says: the default criterion."""
    return SetCriterion(
        HungarianMatcher(config.matcher),
        config.loss_weights,
        num_decoder_layers=config.num_decoder_layers if config.aux_loss else 1,
        box_loss_visible_only=config.box_loss_visible_only,
    )


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` (``auto``/``fp32``/``bf16``/``fp16``) on ``device``; None = fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("this GPU does not support bf16; use --precision fp16 or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("fp16 training needs a CUDA device; use --precision bf16 or fp32 on the CPU")
        return torch.float16
    raise UserError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")


class Trainer:
    """Trains ``model_factory()`` on ``dataset`` as ``config`` says; see the module docstring.

    Args:
        config: the run's :class:`~referformer.engine.recipes.TrainConfig`.
        model_factory: builds the model (called once per process, with the same seed everywhere).
        dataset: map-style dataset of training samples.
        out_dir: run folder (``log.csv``, ``config.json``, ``last.pth``, ``epoch_XXXX.pth``).
        collate_fn: list of samples -> ``(inputs, targets)``.
        forward: ``(model, inputs, targets) -> outputs``.
        resume: a training checkpoint or a run folder (its ``last.pth``) to continue.
        init_convert: maps an original checkpoint's keys to the model's, for ``config.init_from``.
        criterion_factory: builds the loss from ``config`` (default :func:`build_set_criterion`,
            ReferFormer's; RefVOS passes its cross-entropy, see ``engine.wiring``).
        callbacks: called on the main and other processes after every optimizer step with the
            progress and the logged values.
        show_progress: tqdm bar on the main process.
    """

    def __init__(
        self,
        config: TrainConfig,
        model_factory: Callable[[], nn.Module],
        dataset: Dataset,
        out_dir: str | os.PathLike,
        collate_fn: Callable[[list[Any]], Any],
        forward: ForwardFn = default_forward,
        resume: str | os.PathLike | None = None,
        init_convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
        callbacks: Sequence[StepCallback] = (),
        show_progress: bool = True,
        criterion_factory: CriterionFactory | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.collate_fn = collate_fn
        self.forward = forward
        self.callbacks = list(callbacks)
        self.show_progress = show_progress
        self.context = distributed.init_distributed(config.device)
        self.device = self.context.device
        self.autocast_dtype = resolve_precision(config.precision, self.device)
        if config.grad_accum < 1 or config.batch_size < 1:
            raise UserError("--batch-size and --grad-accum must be at least 1")

        seed_everything(config.seed)  # identical initial weights on every rank
        model = model_factory()
        if config.freeze_text_encoder:
            for name, parameter in model.named_parameters():
                if any(keyword in name for keyword in config.optimizer.text_encoder_names):
                    parameter.requires_grad_(False)
        if config.activation_checkpointing:
            if not hasattr(model, "set_activation_checkpointing"):
                raise UserError(f"{type(model).__name__} does not support activation checkpointing")
            model.set_activation_checkpointing(True)
        self.model = model.to(self.device)

        self.criterion = (criterion_factory or build_set_criterion)(config)
        self.optimizer = build_optimizer(self.model, config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, config.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.progress = Progress()

        resume_path = self._resume_path(resume)
        checkpoint = load_training_checkpoint(resume_path) if resume_path else None
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.progress = Progress(**checkpoint["progress"])
        elif config.init_from:
            missing, unexpected = load_initial_weights(self.model, config.init_from, init_convert)
            if self.context.is_main:
                print(
                    f"initialised from {config.init_from}: {len(missing)} missing keys, "
                    f"{len(unexpected)} unexpected keys"
                    + (f" (missing e.g. {missing[:3]})" if missing else "")
                )

        self.ddp_model: nn.Module = self.model
        if self.context.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=device_ids, find_unused_parameters=config.find_unused_parameters
            )

        # per-rank RNG streams (dropout etc.): restored exactly on resume
        seed_everything(config.seed + self.context.rank)
        if checkpoint is not None:
            states = checkpoint["rng"]
            if len(states) == self.context.world_size:
                restore_rng_state(states[self.context.rank])
            elif self.context.is_main:
                print(
                    f"warning: the checkpoint was written by {len(states)} processes, this run has "
                    f"{self.context.world_size}; random streams are re-seeded (resume is not bit-exact)"
                )

        self.seeded_dataset = SeededDataset(dataset, config.seed)
        self.sampler = distributed.ResumableDistributedSampler(len(dataset), seed=config.seed)
        self.steps_per_epoch = len(self.sampler) // config.batch_size // config.grad_accum
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the dataset has {len(dataset)} samples, fewer than one optimizer step needs "
                f"({config.batch_size} x {config.grad_accum} per process x {self.context.world_size} processes)"
            )
        self.log = TrainingLog(
            self.out_dir, enabled=self.context.is_main, resume_step=self.progress.global_step if checkpoint else None
        )
        self.history: list[dict[str, float]] = []

    def _resume_path(self, resume: str | os.PathLike | None) -> Path | None:
        if resume is None:
            return None
        path = Path(resume)
        return path / LAST_CHECKPOINT if path.is_dir() else path

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path | None:
        """Run until ``config.epochs`` (or ``config.max_steps``); returns the last checkpoint written."""
        config = self.config
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(config.as_dict(), indent=2, default=str))
        last_checkpoint = None
        try:
            while self.progress.epoch < config.epochs:
                stopped = self._train_epoch()
                if stopped:
                    return self.save_checkpoint()
                self.scheduler.step()
                self.progress.epoch += 1
                self.progress.step_in_epoch = 0
                last_checkpoint = self.save_checkpoint(epoch_end=True)
        finally:
            self.log.close()
        return last_checkpoint

    def _loader(self) -> DataLoader:
        epoch = self.progress.epoch
        self.sampler.set_epoch(epoch)
        self.seeded_dataset.set_epoch(epoch)
        self.sampler.set_position(self.progress.step_in_epoch * self.config.batch_size * self.config.grad_accum)
        generator = torch.Generator().manual_seed(self.config.seed + epoch)  # keeps the global RNG untouched
        return DataLoader(
            self.seeded_dataset,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def _train_epoch(self) -> bool:
        """One epoch from the current position; True when ``max_steps`` stopped it."""
        config = self.config
        self.ddp_model.train()
        batches = iter(self._loader())
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.progress.step_in_epoch,
            desc=f"epoch {self.progress.epoch + 1}/{config.epochs}",
            disable=not (self.show_progress and self.context.is_main),
            dynamic_ncols=True,
        )
        try:
            while self.progress.step_in_epoch < self.steps_per_epoch:
                values = self._optimizer_step(batches)
                self.progress.step_in_epoch += 1
                self.progress.global_step += 1
                row = {
                    "epoch": self.progress.epoch,
                    "global_step": self.progress.global_step,
                    "step_in_epoch": self.progress.step_in_epoch,
                    **values,
                }
                self.history.append(row)
                if self.progress.global_step % max(config.log_every, 1) == 0:
                    self.log.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")
                for callback in self.callbacks:
                    callback(self.progress, row)
                if config.max_steps and self.progress.global_step >= config.max_steps:
                    return True
                if config.checkpoint_every and self.progress.global_step % config.checkpoint_every == 0:
                    if self.progress.step_in_epoch < self.steps_per_epoch:  # epoch ends save anyway
                        self.save_checkpoint()
        finally:
            bar.close()
        return False

    def _optimizer_step(self, batches) -> dict[str, float]:
        """Accumulate ``grad_accum`` micro-batches, clip, step; returns the logged values."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for micro in range(config.grad_accum):
            inputs, targets = next(batches)
            inputs = move_to_device(inputs, self.device)
            targets = move_to_device(targets, self.device)
            last_micro = micro == config.grad_accum - 1
            sync = contextlib.nullcontext() if last_micro or self.ddp_model is self.model else self.ddp_model.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                    enabled=self.autocast_dtype is not None):
                    outputs = self.forward(self.ddp_model, inputs, targets)
                losses = self.criterion(outputs, targets)
                total = self.criterion.total(losses) / config.grad_accum
                self.scaler.scale(total).backward()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0) + value.detach() / config.grad_accum

        self.scaler.unscale_(self.optimizer)
        max_norm = config.clip_max_norm if config.clip_max_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

        values = distributed.all_reduce_mean_dict(sums)
        values["loss"] = float(weighted_total(values, self.criterion.weight_dict))
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"loss is {values['loss']} at step {self.progress.global_step + 1}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            )
        values["grad_norm"] = float(grad_norm)
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        return values

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The full training state (model, optimizer, scheduler, scaler, progress, RNG of every rank)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": self.progress.as_dict(),
            "rng": distributed.all_gather_object(capture_rng_state()),
            "world_size": self.context.world_size,
            "config": self.config.as_dict(),
        }

    def save_checkpoint(self, epoch_end: bool = False) -> Path:
        """Write ``last.pth`` (and ``epoch_XXXX.pth`` at an epoch end) atomically; all ranks must call."""
        state = self.state_dict()  # collective: every rank gathers the RNG states
        last = self.out_dir / LAST_CHECKPOINT
        if self.context.is_main:
            save_atomic(state, last)
            if epoch_end:
                epoch_file = self.out_dir / f"epoch_{self.progress.epoch:04d}.pth"
                tmp = epoch_file.with_name(f".{epoch_file.name}.tmp")
                try:
                    if tmp.exists():
                        tmp.unlink()
                    os.link(last, tmp)
                except OSError:
                    shutil.copyfile(last, tmp)
                os.replace(tmp, epoch_file)
        distributed.barrier()
        return last
