"""DataLoader construction with per-worker seeding (reproducible, no duplicated augmentations)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from referformer.data.collate import collate_clips

__all__ = ["seed_worker", "make_data_loader"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python's ``random`` and numpy's global RNG from the worker's torch seed.

    The augmentations draw from these generators (as the original); torch gives every worker a
    distinct seed derived from the loader's generator, so workers never repeat each other and a
    seeded generator makes the whole epoch reproducible.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_data_loader(
    dataset: Dataset,
    batch_size: int = 1,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    sampler=None,
) -> DataLoader:
    """A ``DataLoader`` yielding :class:`~referformer.data.collate.VideoBatch` es.

    ``seed`` seeds the shuffling and every worker's augmentation RNGs (``None`` = random).
    With ``num_workers == 0`` the main process' ``random``/``numpy`` state is used as is.
    """
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else int(torch.empty((), dtype=torch.int64).random_().item()))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
