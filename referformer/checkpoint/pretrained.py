"""Our model folders: ``config.json`` (architecture, inference settings, metadata) + ``model.safetensors``.

``save_pretrained`` / ``load_folder`` write and read them (load through :func:`referformer.load_model`). The config's ``model_type`` (absent =
``referformer``; ``refvos`` for :mod:`referformer.models.refvos`, ``propagator``, ``tracklets`` for
:mod:`referformer.models.tracklets`) says which model class the folder
builds: :data:`MODEL_TYPES` is the one registry of model classes. ``"inference"`` holds the
:class:`~referformer.checkpoint.settings.InferenceSettings` the model is meant to run with.

``config.json``::

    {"format_version": 1, "model": {...architecture...}, "inference": {...}, "metadata": {...}}

and, in a folder that leaves a frozen module to a part stored once (:mod:`.shared`),
``"shared": {"text_encoder": "all-MiniLM-L6-v2"}`` (module prefix -> part).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from referformer.checkpoint.official import safe_torch_load
from referformer.checkpoint.settings import ORIGINAL_SETTINGS, InferenceSettings
from referformer.checkpoint.shared import load_shared_parts, strip_shared_parts
from referformer.config import ModelConfig, RefVOSConfig
from referformer.errors import CheckpointMismatchError, UserError
from referformer.models import build_model
from referformer.models.propagation import PropagatorConfig, build_propagator
from referformer.models.refvos import build_refvos
from referformer.models.tracklets import TrackletsConfig, build_tracklet_grounder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def _build_referformer(config: Any, init_weights: bool) -> nn.Module:
    return build_model(config, init_weights=init_weights)


def _build_refvos(config: Any, init_weights: bool) -> nn.Module:
    return build_refvos(config)  # torchvision / transformers initialise; nothing to skip


# model_type of a config.json -> (config from its dict, model from a config). ReferFormer configs
# carry no model_type (older folders neither), so a missing one means referformer.
MODEL_TYPES: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[Any, bool], nn.Module]]] = {
    "referformer": (ModelConfig.from_dict, _build_referformer),
    "refvos": (RefVOSConfig.from_dict, _build_refvos),
    "propagator": (PropagatorConfig.from_dict, build_propagator),  # models.propagation: mask propagation
    "tracklets": (TrackletsConfig.from_dict, build_tracklet_grounder),  # models.tracklets: top-down grounding
}


def model_type_of(config: Any) -> str:
    """``"referformer"`` or ``"refvos"`` (the ``model_type`` of a config object)."""
    return getattr(config, "model_type", "referformer")


def config_from_dict(data: dict[str, Any]) -> Any:
    """The model config written in a ``config.json``'s ``model`` entry, of its ``model_type``."""
    model_type = data.get("model_type", "referformer")
    if model_type not in MODEL_TYPES:
        raise UserError(f"unknown model_type {model_type!r} in the model config; this build knows "
                        f"{', '.join(MODEL_TYPES)} (upgrade referformer?)")
    data = {k: v for k, v in data.items() if k != "model_type"} if model_type == "referformer" else data
    return MODEL_TYPES[model_type][0](data)


def build_from_config(config: Any, init_weights: bool = True) -> nn.Module:
    """The model of ``config`` (a ``ModelConfig`` or a ``RefVOSConfig``) with random weights;
    ``init_weights=False`` skips ReferFormer's initialisation when weights are loaded next."""
    return MODEL_TYPES[model_type_of(config)][1](config, init_weights)


def check_all_keys_loaded(missing: Sequence[str], unexpected: Sequence[str], mismatch: str) -> None:
    """Raise ``CheckpointMismatchError("<mismatch>: missing ..., unexpected ...")`` (first 3 keys of each)
    unless a non-strict load found every key of the model and nothing else."""
    if missing or unexpected:
        raise CheckpointMismatchError(f"{mismatch}: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")


def save_pretrained(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None,
                    inference: InferenceSettings | None = None, shared: Mapping[str, str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``directory`` (created); returns the directory.

    ``inference``: the settings to store (default: the model's ``inference_settings`` attribute when
    it was loaded from a folder, else the original code's). ``shared``: module prefix -> stored part
    (:mod:`referformer.checkpoint.shared`) whose tensors the folder leaves out; each module must equal
    its part (``CheckpointMismatchError`` otherwise)."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = inference or getattr(model, "inference_settings", None) or ORIGINAL_SETTINGS
    payload = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), "inference": settings.to_dict(),
               "metadata": metadata or {}}
    if shared:
        payload["shared"] = dict(shared)
    save_model(model, str(directory / WEIGHTS_FILE))
    if shared:
        strip_shared_parts(directory / WEIGHTS_FILE, shared)
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return directory


def read_pretrained_config(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """(config, metadata) of a ``save_pretrained`` directory; the config is a ``ModelConfig`` or, for
    ``model_type`` ``refvos``, a ``RefVOSConfig``."""
    payload = _read_payload(directory)
    return config_from_dict(payload["model"]), payload.get("metadata", {})


# the model types that answer sentences (segment, evaluate, the web page); a propagator does not
SEGMENTATION_MODEL_TYPES = ("referformer", "refvos", "tracklets")


def folder_model_type(directory: str | Path) -> str:
    """The ``model_type`` of a ``save_pretrained`` directory (``"referformer"`` when absent), read
    from its ``config.json`` without building or checking anything else: a damaged folder reads as
    ``"referformer"`` here and is refused with its own message when loaded."""
    try:
        payload = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
        model = payload.get("model") if isinstance(payload, dict) else None
        return str(model.get("model_type", "referformer")) if isinstance(model, dict) else "referformer"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "referformer"


def read_shared(directory: str | Path) -> dict[str, str]:
    """The ``"shared"`` entry of a ``save_pretrained`` directory (module prefix -> stored part; ``{}`` when
    the folder holds all its tensors)."""
    shared = _read_payload(directory).get("shared") or {}
    if not isinstance(shared, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in shared.items()):
        raise UserError(f"{Path(directory) / CONFIG_FILE}: \"shared\" must map module names to part names")
    return shared


def read_inference_settings(directory: str | Path) -> InferenceSettings:
    """The :class:`InferenceSettings` of a ``save_pretrained`` directory (the original's when the
    folder predates them)."""
    return InferenceSettings.from_dict(_read_payload(directory).get("inference"))


def _read_payload(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise UserError(f"{directory} is not a converted model directory (no {CONFIG_FILE}); "
                        "create one with `referformer convert OFFICIAL.pth --out DIR`")
    try:
        payload = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{cfg_path} is not valid JSON ({err}); the model folder is damaged") from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise UserError(f"{cfg_path}: unsupported format_version {found!r} (this build reads {FORMAT_VERSION})")
    return payload


def load_safetensors_into(model: nn.Module, weights: Path, mismatch: str,
                          shared: Mapping[str, str] | None = None) -> None:
    """Load ``weights`` (a ``.safetensors`` file) into ``model``, and the ``shared`` parts (module prefix
    -> stored part) into their modules; every key required. A damaged or truncated file is one
    ``UserError`` line, not a ``SafetensorError`` traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{weights} is not a readable safetensors file ({str(err).splitlines()[0]}); "
                        "is the download complete? Replace the file (or the whole model folder)") from err
    filled = load_shared_parts(model, shared) if shared else set()
    check_all_keys_loaded([k for k in missing if k not in filled], unexpected, mismatch)


def load_folder(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model described by ``directory/config.json`` (ReferFormer or RefVOS, by its
    ``model_type``) and load ``model.safetensors`` (eval mode). The folder's inference settings are
    attached as ``model.inference_settings``."""
    directory = Path(directory)
    config, _ = read_pretrained_config(directory)
    settings = read_inference_settings(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights} not found; the converted model directory is incomplete")
    model = build_from_config(config, init_weights=False)
    load_safetensors_into(model, weights, f"{weights} does not match {CONFIG_FILE}", read_shared(directory))
    model.inference_settings = settings
    return model.to(device).eval()


def export_training_checkpoint(checkpoint: str | Path, config: Any, directory: str | Path,
                               tokenizer_dir: str | Path | None = None, metadata: dict[str, Any] | None = None,
                               half: bool = False, inference: InferenceSettings | None = None,
                               shared: Mapping[str, str] | None = None) -> Path:
    """A training checkpoint (``Trainer``'s ``last.pth``: ``{"model": state_dict, ...}``) of a model of
    ``config`` -> a ``save_pretrained`` folder (fp16 weights with ``half``), with a copy of
    ``tokenizer_dir`` as ``tokenizer/`` when given, ``inference`` settings and ``shared`` parts (see
    :func:`save_pretrained`). Returns the folder."""
    state = safe_torch_load(Path(checkpoint))
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    model = build_from_config(config, init_weights=False)
    check_all_keys_loaded(*model.load_state_dict(dict(state), strict=False),
                          f"{checkpoint} does not hold a model of the given config")
    model = model.eval()
    directory = save_pretrained(model.half() if half else model, directory, metadata=metadata, inference=inference,
                                shared=shared)
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, Path(directory) / "tokenizer", dirs_exist_ok=True)
    return Path(directory)
