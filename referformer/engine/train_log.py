"""Training log: one CSV row per logged optimizer step (+ TensorBoard scalars when installed).

Columns: ``epoch, global_step, step_in_epoch, lr, grad_norm, loss`` (the weighted total) and then
every unweighted loss term in sorted order (``loss_bbox, loss_bbox_0, ...``), averaged over
processes. Only the main process writes. On resume, rows after the resumed step are dropped
first, so the file never holds two versions of a step.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["TrainingLog", "read_log"]

FIXED_COLUMNS = ("epoch", "global_step", "step_in_epoch", "lr", "grad_norm", "loss")


class TrainingLog:
    """Appends rows to ``out_dir/log.csv`` (and ``out_dir/tensorboard`` if tensorboard is installed)."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.path = Path(out_dir) / "log.csv"
        self.enabled = enabled
        self.columns: list[str] | None = None
        self.tensorboard = None
        if not enabled:
            return
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()
        elif self.path.exists():
            rows = [row for row in read_log(self.path) if int(row["global_step"]) <= resume_step]
            self.columns = list(read_log_columns(self.path))
            with open(self.path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tensorboard = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.columns is None:
            terms = sorted(k for k in row if k not in FIXED_COLUMNS)
            self.columns = list(FIXED_COLUMNS) + terms
            with open(self.path, "w", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.columns).writeheader()
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self.tensorboard is not None:
            step = int(row["global_step"])
            for key, value in row.items():
                if key not in ("epoch", "global_step", "step_in_epoch"):
                    self.tensorboard.add_scalar(f"train/{key}", float(value), step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def read_log_columns(path: str | Path) -> list[str]:
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def read_log(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``log.csv`` as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
