"""Process-group helpers for ``torchrun`` launches, and a sampler that can resume mid-epoch.

``torchrun --nproc_per_node N [--nnodes M ...] -m referformer train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; :func:`init_distributed` reads them
(gloo on CPU, nccl on CUDA). Without them everything runs as a single process and the helpers
below are no-ops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistributedContext",
    "init_distributed",
    "is_initialized",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_sum",
    "all_reduce_mean_dict",
    "all_gather_object",
    "ResumableDistributedSampler",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: global rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistributedContext:
    """Initialise the default process group from the ``torchrun`` environment, if any.

    Args:
        device: ``"cuda"``, ``"cpu"`` or None (CUDA when available). With CUDA each process uses
            ``cuda:LOCAL_RANK`` and the nccl backend; on CPU gloo.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": torch_device} if use_cuda else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over processes (in place when distributed; returned either way)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_dict(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean over processes of scalar tensors (for logging) -> python floats, same keys."""
    if not values:
        return {}
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if is_initialized():
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= get_world_size()
    return dict(zip(names, stacked.tolist()))


def all_gather_object(obj: object) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_initialized():
        return [obj]
    gathered: list[object] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class ResumableDistributedSampler(Sampler[int]):
    """``torch.utils.data.DistributedSampler`` that can start part-way through an epoch.

    Same order as the torch sampler (``randperm`` seeded with ``seed + epoch``, padded by
    repetition to a multiple of the world size, rank ``r`` taking every ``world_size``-th index
    from ``r``), so a single process with batch ``B * W`` sees the same global batches as ``W``
    processes with batch ``B``. :meth:`set_position` skips the first indices of this rank's share,
    which is how ``--resume`` continues an interrupted epoch.
    """

    def __init__(
        self,
        dataset_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.dataset_size = dataset_size
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0
        if drop_last:
            self.num_samples = dataset_size // self.num_replicas
        else:
            self.num_samples = math.ceil(dataset_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` and rewind to its start."""
        self.epoch = epoch
        self.start = 0

    def set_position(self, samples_done: int) -> None:
        """Skip the first ``samples_done`` indices of this rank's share of the current epoch."""
        self.start = samples_done

    def rank_indices(self) -> list[int]:
        """All indices of this rank for the current epoch (before skipping)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            indices = list(range(self.dataset_size))
        if self.drop_last:
            indices = indices[: self.total_size]
        elif self.total_size > len(indices):
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices()[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)
