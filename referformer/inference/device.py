"""Choosing the device and the numeric precision of inference.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU. ``resolve_dtype`` parses the
precision names the command line accepts (``fp32`` by default, ``bf16``, ``fp16``) and refuses,
with a :class:`~referformer.errors.UserError`, a precision the chosen device cannot run.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from referformer.errors import UserError

# Accepted spellings of each precision (lower case), mapped to the torch dtype.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Return the device named by ``name``, checking that it exists on this machine.

    ``"auto"`` (or ``None``) picks ``cuda`` when a CUDA GPU is visible, else ``mps`` on Apple
    silicon, else ``cpu``. Explicit names (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) are
    checked: asking for a GPU that is not there raises :class:`UserError`.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} requested but no CUDA GPU is available "
                "(use --device cpu, or --device auto to pick what is there)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(
                f"device {name!r} requested but only {count} CUDA GPU(s) are visible "
                f"(use cuda:0 .. cuda:{count - 1})"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise UserError(
                f"device {name!r} requested but Apple MPS is not available "
                "(use --device cpu, or --device auto)"
            )
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def _device_supports(device: torch.device, dtype: torch.dtype) -> bool:
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        if dtype == torch.bfloat16:
            return torch.cuda.is_bf16_supported()
        return True  # fp16 runs on every CUDA GPU torch supports
    if device.type == "cpu":
        # bf16 matmuls/convolutions are implemented on the CPU; fp16 ones are partial and slow.
        return dtype == torch.bfloat16
    if device.type == "mps":
        if dtype == torch.float16:
            return True
        try:  # bf16 needs macOS 14 or newer; probing is the reliable test
            torch.ones(1, dtype=dtype, device=device)
        except (RuntimeError, TypeError):
            return False
        return True
    return False


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Parse a precision name (``fp32``, ``bf16``, ``fp16`` or their long forms) for ``device``.

    ``None`` means ``fp32``. Raises :class:`UserError` for an unknown name or a precision the
    device cannot run (fp16 on the CPU, bf16 on a GPU without bf16 support...).
    """
    if isinstance(name, torch.dtype):
        dtype = name
        label = str(name).removeprefix("torch.")
    else:
        label = (name or "fp32").strip().lower()
        if label not in DTYPE_NAMES:
            raise UserError(
                f"unknown precision {name!r}: use one of {', '.join(DTYPE_CHOICES)}"
            )
        dtype = DTYPE_NAMES[label]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise UserError(f"unsupported precision {label!r}: use one of {', '.join(DTYPE_CHOICES)}")
    if not _device_supports(device, dtype):
        hint = "bf16 or fp32" if device.type == "cpu" else "fp32"
        raise UserError(
            f"precision {label!r} is not supported on device {str(device)!r} (use --dtype {hint})"
        )
    return dtype


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[object]:
    """Return an autocast context running in ``dtype`` on ``device`` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
