"""Training checkpoints: atomic writes and full-state resume.

A training checkpoint (``torch.save`` of a dict, ``format`` 1) holds everything needed to continue
*exactly*: ``model`` (state dict of the unwrapped model), ``optimizer``, ``scheduler``, ``scaler``
(GradScaler, fp16 only), ``progress`` (:class:`Progress`), ``rng`` (one entry per rank: python,
numpy, torch CPU and CUDA generator states) and ``config`` (the training config as a dict).
Files are written to a temporary file in the same folder and moved into place with
:func:`os.replace`, so a run killed mid-write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from referformer.checkpoint import read_state_dict, safe_torch_load
from referformer.errors import CheckpointMismatchError, UserError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Progress",
    "save_atomic",
    "load_training_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "load_initial_weights",
]

CHECKPOINT_FORMAT = 1


@dataclass
class Progress:
    """Where training stands: ``epoch`` (0-based, the one in progress), ``step_in_epoch``
    (optimizer steps completed in it) and ``global_step`` (optimizer steps since the start)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file + ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by the trainer (tensors and plain Python values only: loaded with
    ``weights_only=True``, so a tampered file cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no training checkpoint at {path}; give a file written by 'referformer train'")
    checkpoint = _safe_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} is not a training checkpoint of this version (expected format {CHECKPOINT_FORMAT}); "
            "to start from model weights only, use --init instead of --resume"
        )
    return checkpoint


def _safe_load(path: Path) -> Any:
    """Tensors and plain values only (``weights_only=True``): a tampered file cannot run code."""
    return safe_torch_load(path, unsafe_hint="only tensors and plain values are accepted: convert it with "
                                             "'referformer convert' or re-save its state dict")


def _numpy_state_to_plain(state: tuple) -> tuple:
    """``np.random.get_state()`` with its key array as a tensor (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (CPU) and CUDA generator states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_initial_weights(
    model: nn.Module,
    path: str | os.PathLike,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> tuple[list[str], list[str]]:
    """Initialise ``model`` from an official checkpoint (``{"model": state_dict}``), one of our
    training checkpoints (or a run folder: its ``last.pth``), a model folder, or a bare state dict
    (``.pth`` or ``.safetensors``).

    Like the original ``--pretrained_weights``, loading is non-strict; the keys that were missing
    or unexpected are returned (and should be reported). ``convert`` maps an original key layout
    to this model's (the model package's checkpoint converter).

    Returns:
        ``(missing_keys, unexpected_keys)``.
    """
    folder = Path(path)
    if folder.is_dir() and not (folder / "model.safetensors").is_file() and (folder / "last.pth").is_file():
        path = folder / "last.pth"  # a training run's folder: its last checkpoint
    state = read_state_dict(path)  # a bundled name, a folder, a .safetensors or a .pth (its "model" entry)
    if convert is not None:
        state = convert(state)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5])
        raise CheckpointMismatchError(f"{path}: tensors with another shape than the model's: {shapes}; is it the same architecture?")
    result = model.load_state_dict(state, strict=False)
    # a key tied to a loaded one (same tensor, e.g. bbox_embed <-> transformer.decoder.bbox_embed,
    # which safetensors stores once) is loaded too
    loaded = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded]
    return missing, list(result.unexpected_keys)
