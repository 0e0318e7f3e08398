"""The one loader: ``load_model(name_or_path, preset=None)`` for every kind of checkpoint.

Accepted: the name of a bundled model (:mod:`.registry`), one of our folders (:mod:`.pretrained`),
an official ``.pth`` (:mod:`.official`, architecture from ``preset`` or guessed from its keys), a
RefVOS training checkpoint with a ``refvos-*`` preset, or a bare ``.safetensors`` state dict.
The model comes back in eval mode with two attributes every entry point reads:
``inference_settings`` (how it is meant to run) and ``checkpoint_path`` (where it came from, to
find a tokenizer saved beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from referformer.checkpoint.official import guess_preset, load_official_state_dict, read_official_checkpoint
from referformer.checkpoint.pretrained import (CONFIG_FILE, WEIGHTS_FILE, build_from_config, check_all_keys_loaded,
                                               load_folder, model_type_of, read_shared)
from referformer.checkpoint.registry import resolve_checkpoint
from referformer.checkpoint.shared import read_shared_part
from referformer.checkpoint.settings import ORIGINAL_SETTINGS
from referformer.errors import CheckpointMismatchError, UserError
from referformer.presets import get_preset

# config fields that do not change the weights (a folder may differ from its preset there)
_NOT_ARCHITECTURE = {"tokenizer", "attn_implementation", "train_backbone"}


def config_differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """``["field found (preset: expected)", ...]`` for architecture fields that differ (nested dicts
    compared field by field, ``tokenizer`` / ``attn_implementation`` / ``train_backbone`` ignored)."""
    out = []
    for key in sorted(set(expected) | set(found)):
        if key in _NOT_ARCHITECTURE:
            continue
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {b!r} (preset: {a!r})")
    return out


def _read_safetensors_state_dict(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]}); "
                        "is the download complete?") from err


def read_state_dict(name_or_path: str | Path, unsafe_load: bool = False) -> dict[str, Tensor]:
    """The tensors of any checkpoint, keys as stored: a folder's (or bundled model's)
    ``model.safetensors`` with the shared parts it names, a ``.safetensors`` file, or a ``.pth``
    holding ``{"model": state_dict, ...}`` (official and training checkpoints) or a bare state dict.
    Damaged files are one ``UserError`` line."""
    path = resolve_checkpoint(name_or_path)
    if path.is_dir():
        folder, path = path, path / WEIGHTS_FILE
        if not path.is_file():
            raise UserError(f"{path} not found; the model folder is incomplete")
        state = _read_safetensors_state_dict(path)
        shared = read_shared(folder) if (folder / CONFIG_FILE).is_file() else {}
        for prefix, name in shared.items():  # the parts the folder leaves to assets/shared
            state.update({f"{prefix}.{k}": v for k, v in read_shared_part(name).items()})
        return state
    if path.suffix == ".safetensors":
        return _read_safetensors_state_dict(path)
    return read_official_checkpoint(path, unsafe_load=unsafe_load)


def _load_state_dict_file(path: Path, preset: str | None, unsafe_load: bool) -> nn.Module:
    """An official-layout (or RefVOS training) state dict in a ``.pth`` / ``.safetensors`` file."""
    state_dict = read_state_dict(path, unsafe_load=unsafe_load)
    name = preset if preset is not None else guess_preset(state_dict, path)
    config = get_preset(name).config
    model = build_from_config(config, init_weights=False)
    if model_type_of(config) == "referformer":
        load_official_state_dict(model, state_dict)
    else:  # RefVOS: our own training checkpoints (no official format exists)
        check_all_keys_loaded(*model.load_state_dict(state_dict, strict=False), f"{path} does not match preset {name!r}")
    return model


def load_model(name_or_path: str | Path, preset: str | None = None, device: str | torch.device = "cpu",
               unsafe_load: bool = False) -> nn.Module:
    """A model in eval mode on ``device`` from a bundled name, our folder, or a weights file.

    Args:
        name_or_path: a bundled model's name (``synthetic-tiny``), a folder written by
            ``save_pretrained`` / ``referformer convert``, an official ``.pth`` or a ``.safetensors``
            state dict in the official layout.
        preset: architecture of a weights file (see ``referformer presets``; guessed from the keys
            when omitted). For a folder, a check: its architecture must be the preset's.
        unsafe_load: allow arbitrary pickled objects in a ``.pth`` (only for trusted files).

    Returns:
        the model, with ``model.inference_settings`` (the folder's, or the original's for a weights
        file) and ``model.checkpoint_path``.
    """
    path = resolve_checkpoint(name_or_path)
    if path.is_file() and path.suffix == ".safetensors" and (path.parent / CONFIG_FILE).is_file():
        path = path.parent  # model.safetensors of one of our folders: load the folder
    if path.is_dir():
        model = load_folder(path)
        if preset is not None:
            diffs = config_differences(get_preset(preset).config.to_dict(), model.config.to_dict())
            if diffs:
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not match preset {preset!r}: it has {', '.join(diffs[:4])}; "
                    "drop --preset (a converted folder knows its architecture) or pick the matching preset")
    else:
        model = _load_state_dict_file(path, preset, unsafe_load)
        model.inference_settings = ORIGINAL_SETTINGS
    model.checkpoint_path = path
    return model.to(device).eval()
