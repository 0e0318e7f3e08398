"""Sharded, resumable runs over the videos of a split, and the atomic writes they rely on.

A split is a list of *units* (videos; A2D/JHMDB videos; RefCOCO images). Each process of a
``torchrun`` launch (rank / world size from the environment, gloo on CPU) takes the units
``rank, rank + world, ...``; for every unit it writes the unit's outputs, then a small JSON
*record* (``<out>/records/<unit>.json``) holding everything the final scores need. The record is
written last and atomically, so a unit with a record is complete: a re-run skips it (resume).
After a barrier, rank 0 reads every record in split order and computes the numbers, which are
therefore the same whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from referformer.errors import DatasetFormatError

__all__ = ["RunContext", "atomic_write_text", "publish_dir", "record_name", "run_units"]

Unit = TypeVar("Unit")


@dataclass(frozen=True)
class RunContext:
    """This process's place in the launch: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, units: Sequence[Unit]) -> list[Unit]:
        """The units of this process: ``units[rank::world_size]``."""
        return list(units[self.rank::self.world_size])

    def barrier(self) -> None:
        from referformer.engine.distributed import barrier

        barrier()

    @classmethod
    def from_environment(cls) -> RunContext:
        """Rank and world size of a ``torchrun`` launch, else 0 / 1.

        Initialises a gloo process group (CPU): the processes exchange nothing but barriers, so
        this works whatever device each process computes on.
        """
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from referformer.engine.distributed import init_distributed

        ctx = init_distributed("cpu")
        return cls(ctx.rank, ctx.world_size)


def record_name(unit_id: str) -> str:
    """A file name for a unit id: the id itself when it is a plain name, else a readable hash."""
    safe = all(c.isalnum() or c in "-_.+" for c in unit_id) and not unit_id.startswith(".")
    return unit_id if safe and unit_id else f"{unit_id.replace('/', '_')[:40]}-{hashlib.sha1(unit_id.encode()).hexdigest()[:10]}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_dir(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` folder to ``final`` (replacing a partial one left by a crash)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)


def staging_dir(out_dir: Path, name: str) -> Path:
    """A fresh private folder under ``out_dir/.staging`` (same file system, so renames are atomic)."""
    base = out_dir / ".staging"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base, prefix=f"{record_name(name)}."))


def run_units(
    units: Sequence[Unit],
    unit_id: Callable[[Unit], str],
    process: Callable[[Unit], dict[str, Any]],
    out_dir: Path,
    context: RunContext,
    *,
    desc: str = "evaluate",
    progress: bool = True,
) -> list[dict[str, Any]] | None:
    """Process this rank's share of ``units`` (skipping those with a record), then merge.

    ``process(unit)`` writes the unit's outputs and returns its JSON-able record. Returns, on rank
    0, the records of **all** units in ``units`` order (after a barrier); None on other ranks.
    Raises :class:`DatasetFormatError` on rank 0 if a record is missing after the barrier.
    """
    from tqdm import tqdm

    records_dir = out_dir / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    mine = context.shard(units)
    todo = [u for u in mine if not (records_dir / f"{record_name(unit_id(u))}.json").is_file()]
    skipped = len(mine) - len(todo)
    bar = tqdm(todo, desc=desc, unit="video", disable=not (progress and context.is_main), dynamic_ncols=True)
    if skipped and progress and context.is_main:
        bar.write(f"{desc}: resuming, {skipped} of {len(mine)} videos already done")
    for unit in bar:
        record = process(unit)
        atomic_write_text(records_dir / f"{record_name(unit_id(unit))}.json", json.dumps(record))
    context.barrier()
    if not context.is_main:
        return None
    shutil.rmtree(out_dir / ".staging", ignore_errors=True)
    records = []
    for unit in units:
        path = records_dir / f"{record_name(unit_id(unit))}.json"
        if not path.is_file():
            raise DatasetFormatError(f"{path} is missing after every process finished; re-run to complete it")
        records.append(json.loads(path.read_text(encoding="utf-8")))
    return records
