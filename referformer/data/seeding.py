"""Seeding: per-rank process seeds and per-sample data seeds.

Data augmentation in the original loaders draws from the *global* python/numpy RNGs, so what a
clip looks like depends on everything drawn before it. :class:`SeededDataset` makes each sample a
function of ``(seed, epoch, index)`` alone: the RNGs are seeded from those three numbers around
every ``__getitem__`` and restored afterwards. That is what lets a resumed run (or a run on a
different number of processes / workers) see exactly the same clips as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["seed_everything", "sample_seed", "isolated_rng", "SeededDataset"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run the body with python/numpy/torch-CPU RNGs seeded with ``seed``, then restore them."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA generators are left alone
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` is drawn with seed ``f(seed, e, i)``.

    Call :meth:`set_epoch` before creating the epoch's ``DataLoader`` iterator (workers are forked
    then and copy the epoch).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with isolated_rng(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]
