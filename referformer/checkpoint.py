"""Checkpoints: the official ``.pth`` key layout (mapped here, once) and our own format.

Official checkpoints are ``{"model": state_dict, ...}`` saved by the original code. Our modules
carry the original names, so the only key mapping is ``backbone.0.body.`` <-> ``backbone.body.``
(the original wraps the backbone and its position encoding in an ``nn.Sequential`` "Joiner").

Loading an official state dict (``load_official_state_dict``):

* every key of the model must be present (tied aliases may be given once), every checkpoint key
  must be used, shapes must agree; a mismatch raises ``CheckpointMismatchError`` naming the likely
  cause (release vs default preset, class count, backbone);
* ``text_encoder.embeddings.position_ids`` (and ``token_type_ids``) buffers of old transformers
  versions are ignored, incoming ``num_batches_tracked`` are dropped;
* Swin ``relative_position_index`` constants are optional; when present they must equal the module's;
* tied keys (``class_embed.*``/``bbox_embed.*`` in default, ``bbox_embed.*`` <->
  ``transformer.decoder.bbox_embed.*`` in release) must all be present and hold equal values.

Our format (``save_pretrained``/``from_pretrained``): ``config.json`` (the model config plus a
little metadata) and ``model.safetensors`` (shared tensors stored once). The config's ``model_type``
(absent = ``referformer``; ``refvos`` for :mod:`referformer.models.refvos`) says which model class the
folder builds: :data:`MODEL_TYPES` is the one registry of model classes.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from referformer.config import ModelConfig
from referformer.errors import CheckpointMismatchError, UserError

OFFICIAL_BACKBONE_PREFIX = "backbone.0.body."
OUR_BACKBONE_PREFIX = "backbone.body."
# Buffers the official checkpoints may contain that carry no information for us.
IGNORED_OFFICIAL_KEYS = ("text_encoder.embeddings.position_ids", "text_encoder.embeddings.token_type_ids")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def official_to_ours(key: str) -> str:
    """Map one official state-dict key to ours."""
    if key.startswith(OFFICIAL_BACKBONE_PREFIX):
        return OUR_BACKBONE_PREFIX + key[len(OFFICIAL_BACKBONE_PREFIX):]
    return key


def ours_to_official(key: str) -> str:
    """Map one of our state-dict keys to the official layout."""
    if key.startswith(OUR_BACKBONE_PREFIX):
        return OFFICIAL_BACKBONE_PREFIX + key[len(OUR_BACKBONE_PREFIX):]
    return key


def to_official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Our model's state dict with official key names (tied keys share one tensor, like the original)."""
    return {ours_to_official(k): v for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# reading official files
# ---------------------------------------------------------------------------------------------
# Names of models shipped with the package -> path relative to the package folder. The bundling
# step (synthetic-tiny) registers its weights here; every place that accepts a checkpoint goes
# through resolve_checkpoint, so a name listed here works everywhere.
BUNDLED_MODELS: dict[str, str] = {
    "synthetic-tiny": "assets/synthetic-tiny",  # referformer.synthetic.model (trained on the synthetic benchmark)
}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The path of a checkpoint given by path or by the name of a bundled model.

    Accepts a converted model folder (``config.json`` + ``model.safetensors``), an official ``.pth``
    file, or a name of :data:`BUNDLED_MODELS`. Raises ``UserError`` when nothing is found.
    """
    name = str(name_or_path)
    if name in BUNDLED_MODELS:
        path = Path(__file__).resolve().parent / BUNDLED_MODELS[name]
        if not (path / "model.safetensors").is_file():
            raise UserError(f"bundled model {name!r} is missing from this installation ({path}); reinstall referformer")
        return path
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    known = f" or a bundled model ({', '.join(sorted(BUNDLED_MODELS))})" if BUNDLED_MODELS else ""
    raise UserError(f"checkpoint not found: {name}; pass a converted model folder, an official .pth file{known}")


def _unpickling_reason(err: Exception) -> str:
    """The informative line of torch's weights-only error (the global it refused)."""
    lines = [line.strip() for line in str(err).splitlines()]
    return next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")


def safe_torch_load(path: Path, unsafe_load: bool = False,
                    unsafe_hint: str = "if you trust the file, pass --unsafe-load (unsafe_load=True)") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (``argparse.Namespace``, the official
    checkpoints' ``args``, allow-listed; zip files memory-mapped). A file holding other Python objects
    or no checkpoint at all is reported as a one-line ``UserError``; ``unsafe_hint`` says what to do
    about the former. ``unsafe_load=True`` permits arbitrary pickles: only for trusted files."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:  # memory-map zip-format files (fast, no copy); legacy files cannot be mapped
                return torch.load(path, map_location="cpu", weights_only=not unsafe_load, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                return torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of Python objects at all: garbage bytes
            raise UserError(f"{path} is not a readable PyTorch checkpoint; is the download complete?") from err
        raise UserError(f"{path} contains Python objects that cannot be loaded safely "
                        f"({_unpickling_reason(err)}); {unsafe_hint}") from err
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        detail = f" ({str(err).splitlines()[0]})" if isinstance(err, RuntimeError) and str(err) else ""
        raise UserError(f"{path} is not a readable PyTorch checkpoint{detail}; is the download complete?") from err


def read_official_checkpoint(path: str | Path, unsafe_load: bool = False) -> dict[str, Tensor]:
    """Read an official ``.pth`` and return its state dict (the ``model`` entry).

    Uses ``torch.load(weights_only=True)``; ``argparse.Namespace`` (the ``args`` entry of the official
    checkpoints) is allow-listed. ``unsafe_load=True`` permits arbitrary pickles: only for trusted files.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass the path of an official ReferFormer .pth file")
    ckpt = safe_torch_load(path, unsafe_load=unsafe_load)
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        sd = ckpt["model"]
    elif isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        keys = list(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise UserError(f"{path} has no 'model' state dict (found {keys}); expected an official ReferFormer checkpoint")
    return dict(sd)


def infer_architecture(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Guess backbone / box refinement / class count from official (or our) keys; missing facts are None."""
    sd = {official_to_ours(k): v for k, v in state_dict.items()}
    info: dict[str, Any] = {"backbone": None, "with_box_refine": None, "num_classes": None}
    if any(k.startswith("class_embed.") for k in sd):
        info["with_box_refine"] = any(k.startswith("transformer.decoder.bbox_embed.") for k in sd)
    w = sd.get("class_embed.0.weight")
    if w is not None:
        info["num_classes"] = int(w.shape[0])
    p = OUR_BACKBONE_PREFIX
    if f"{p}layer1.0.conv1.weight" in sd:
        n3 = len({k.split(".")[3] for k in sd if k.startswith(f"{p}layer3.")})
        bottleneck = f"{p}layer1.0.conv3.weight" in sd
        info["backbone"] = {(True, 6): "resnet50", (True, 23): "resnet101", (False, 2): "resnet18",
                            (False, 6): "resnet34"}.get((bottleneck, n3), "resnet (unknown depth)")
    elif f"{p}patch_embed.proj.weight" in sd:
        proj = sd[f"{p}patch_embed.proj.weight"]
        video = proj.dim() == 5
        dim = int(proj.shape[0])
        depth3 = len({k.split(".")[5] for k in sd if k.startswith(f"{p}layers.2.blocks.")})
        size = {96: "t" if depth3 <= 6 else "s", 128: "b", 192: "l"}.get(dim, "?")
        info["backbone"] = f"{'video_swin' if video else 'swin'}_{size}_p4w7"
    return info


def _mismatch_hints(config: ModelConfig, found: dict[str, Any]) -> list[str]:
    hints = []
    if found["with_box_refine"] is not None and found["with_box_refine"] != config.with_box_refine:
        if found["with_box_refine"]:
            hints.append("checkpoint has per-layer box heads (box refinement): use a release preset "
                         "(e.g. resnet50-release or a model-zoo preset)")
        else:
            hints.append("checkpoint has no per-layer box heads (no box refinement): use a default preset "
                         "(e.g. resnet50-default)")
    if found["num_classes"] is not None and found["num_classes"] != config.num_classes:
        hints.append(f"checkpoint has {found['num_classes']} class(es) but the model {config.num_classes}: "
                     f"use a {'release (binary)' if found['num_classes'] == 1 else 'default'} preset or set num_classes")
    if found["backbone"] is not None and found["backbone"] != config.backbone:
        hints.append(f"checkpoint backbone looks like {found['backbone']} but the model uses {config.backbone}: "
                     f"pick a preset with backbone {found['backbone']}")
    return hints


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """Groups of our state-dict keys that are one tensor (shared modules)."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for k, v in model.state_dict(keep_vars=True).items():
        groups[(v.data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)].append(k)
    return [g for g in groups.values() if len(g) > 1]


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load an official-layout state dict into ``model`` (a ``ReferFormer``), checking everything (see module doc)."""
    config: ModelConfig | None = getattr(model, "config", None)
    incoming: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if k in IGNORED_OFFICIAL_KEYS or k.endswith("num_batches_tracked"):
            continue
        incoming[official_to_ours(k)] = v
    own = model.state_dict()

    problems: list[str] = []
    # Swin relative_position_index: optional constants, but if given they must be the module's.
    for k in [k for k in own if k.endswith("relative_position_index")]:
        if k in incoming:
            if incoming[k].shape != own[k].shape or not torch.equal(incoming[k].to(own[k].dtype), own[k]):
                problems.append(f"{ours_to_official(k)} differs from the constant the architecture defines "
                                "(window size / Swin variant mismatch?)")
        else:
            incoming[k] = own[k]
    # tied keys (one tensor in the model, every alias present in the checkpoint) must hold equal values
    for group in _tied_groups(model):
        present = [k for k in group if k in incoming]
        for k in present[1:]:
            ref = incoming[present[0]]
            if incoming[k].shape == ref.shape and not torch.equal(incoming[k], ref):
                problems.append(f"tied keys {ours_to_official(present[0])} and {ours_to_official(k)} hold different "
                                "values but the architecture shares them (wrong preset?)")

    missing = [k for k in own if k not in incoming]
    unexpected = [k for k in incoming if k not in own]
    bad_shapes = [(k, tuple(incoming[k].shape), tuple(own[k].shape)) for k in own
                  if k in incoming and tuple(incoming[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shapes or problems:
        lines = []
        if config is not None:
            lines += _mismatch_hints(config, infer_architecture(state_dict))
        if missing:
            lines.append(f"{len(missing)} key(s) missing from the checkpoint, e.g. "
                         + ", ".join(ours_to_official(k) for k in missing[:3]))
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected key(s) in the checkpoint, e.g. "
                         + ", ".join(ours_to_official(k) for k in unexpected[:3]))
        if bad_shapes:
            lines.append(f"{len(bad_shapes)} shape mismatch(es), e.g. "
                         + ", ".join(f"{ours_to_official(k)}: checkpoint {a} vs model {b}" for k, a, b in bad_shapes[:3]))
        lines += problems[:3]
        raise CheckpointMismatchError("checkpoint does not match the model: " + "; ".join(lines))
    own_dtypes = {k: v.dtype for k, v in own.items()}
    model.load_state_dict({k: v.to(own_dtypes[k]) for k, v in incoming.items()}, strict=True)


def load_official_checkpoint(model: nn.Module, path: str | Path, unsafe_load: bool = False) -> nn.Module:
    """Read an official ``.pth`` and load it into ``model`` (see ``load_official_state_dict``); returns ``model``."""
    load_official_state_dict(model, read_official_checkpoint(path, unsafe_load=unsafe_load))
    return model


def save_official_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write ``{"model": state_dict}`` with official key names (for tools and tests)."""
    torch.save({"model": to_official_state_dict(model)}, path)


# ---------------------------------------------------------------------------------------------
# our format
# ---------------------------------------------------------------------------------------------
def _build_referformer(config: Any, init_weights: bool) -> nn.Module:
    from referformer.models import build_model

    return build_model(config, init_weights=init_weights)


def _build_refvos(config: Any, init_weights: bool) -> nn.Module:
    from referformer.models.refvos import build_refvos

    return build_refvos(config)  # torchvision / transformers initialise; nothing to skip


def _referformer_config(data: dict[str, Any]) -> Any:
    return ModelConfig.from_dict(data)


def _refvos_config(data: dict[str, Any]) -> Any:
    from referformer.models.refvos import RefVOSConfig

    return RefVOSConfig.from_dict(data)


# model_type of a config.json -> (config from its dict, model from a config). ReferFormer configs
# carry no model_type (older folders neither), so a missing one means referformer.
MODEL_TYPES: dict[str, tuple[Any, Any]] = {
    "referformer": (_referformer_config, _build_referformer),
    "refvos": (_refvos_config, _build_refvos),
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


def save_pretrained(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``directory`` (created); returns the directory."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    payload = {"format_version": FORMAT_VERSION, "model": config.to_dict(), "metadata": metadata or {}}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_model(model, str(directory / WEIGHTS_FILE))
    return directory


def read_pretrained_config(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """(config, metadata) of a ``save_pretrained`` directory; the config is a ``ModelConfig`` or, for
    ``model_type`` ``refvos``, a ``RefVOSConfig``."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise UserError(f"{directory} is not a converted model directory (no {CONFIG_FILE}); "
                        "create one with `referformer convert OFFICIAL.pth --preset NAME --out DIR`")
    payload = json.loads(cfg_path.read_text(encoding="utf-8"))
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{cfg_path}: unsupported format_version {payload.get('format_version')!r} "
                        f"(this build reads {FORMAT_VERSION})")
    return config_from_dict(payload["model"]), payload.get("metadata", {})


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model described by ``directory/config.json`` (ReferFormer or RefVOS, by its
    ``model_type``) and load ``model.safetensors`` (eval mode)."""
    from safetensors.torch import load_model

    directory = Path(directory)
    config, _ = read_pretrained_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights} not found; the converted model directory is incomplete")
    model = build_from_config(config, init_weights=False)
    check_all_keys_loaded(*load_model(model, str(weights), strict=False), f"{weights} does not match {CONFIG_FILE}")
    return model.to(device).eval()


def export_training_checkpoint(checkpoint: str | Path, config: Any, directory: str | Path,
                               tokenizer_dir: str | Path | None = None, metadata: dict[str, Any] | None = None,
                               half: bool = False) -> Path:
    """A training checkpoint (``Trainer``'s ``last.pth``: ``{"model": state_dict, ...}``) of a model of
    ``config`` -> a ``save_pretrained`` folder (fp16 weights with ``half``), with a copy of
    ``tokenizer_dir`` as ``tokenizer/`` when given. Returns the folder."""
    import shutil

    state = safe_torch_load(Path(checkpoint))
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    model = build_from_config(config, init_weights=False)
    check_all_keys_loaded(*model.load_state_dict(dict(state), strict=False),
                          f"{checkpoint} does not hold a model of the given config")
    model = model.eval()
    directory = save_pretrained(model.half() if half else model, directory, metadata=metadata)
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, Path(directory) / "tokenizer", dirs_exist_ok=True)
    return Path(directory)
