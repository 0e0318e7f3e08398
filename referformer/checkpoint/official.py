"""The official checkpoints: their ``.pth`` key layout, mapped here once, and how they are read.

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
"""

from __future__ import annotations

import argparse
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from referformer.config import ModelConfig
from referformer.errors import CheckpointMismatchError, UserError

OFFICIAL_BACKBONE_PREFIX = "backbone.0.body."
OUR_BACKBONE_PREFIX = "backbone.body."
# Buffers the official checkpoints may contain that carry no information for us.
IGNORED_OFFICIAL_KEYS = ("text_encoder.embeddings.position_ids", "text_encoder.embeddings.token_type_ids")


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



def _unpickling_reason(err: Exception) -> str:
    """The informative line of torch's weights-only error (the global it refused)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line),
                lines[-1] if lines else "")


def _refused_by_weights_only(err: Exception) -> bool:
    """True when ``torch.load(weights_only=True)`` refused Python objects (a global it does not allow,
    a call it does not make), not garbage bytes (``Unsupported operand``, ``invalid load key``)."""
    text = str(err)
    return "GLOBAL" in text or "Unsupported global" in text or "call reduce" in text or "Unsupported class" in text


def safe_torch_load(path: Path, unsafe_load: bool = False,
                    unsafe_hint: str = "if you trust the file, pass --unsafe-load (unsafe_load=True in Python)") -> Any:
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
        if _refused_by_weights_only(err):
            raise UserError(f"{path} contains Python objects that cannot be loaded safely "
                            f"({_unpickling_reason(err)}); {unsafe_hint}") from err
        raise UserError(f"{path} is not a readable PyTorch checkpoint; is the download complete?") from err
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        detail = f" ({first.split('. ')[0]})" if isinstance(err, RuntimeError) and first else ""
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


def guess_preset(state_dict: Mapping[str, Tensor], source: str | Path) -> str:
    """The preset of an official-layout state dict, from its keys: ``<backbone>-release`` (box
    refinement, the published checkpoints) or ``<backbone>-default``. ``UserError`` (naming
    ``source``) when the keys do not tell."""
    info = infer_architecture(state_dict)
    if info["backbone"] is None or info["with_box_refine"] is None:
        raise UserError(f"cannot infer the architecture of {source}; pass --preset NAME (preset=NAME in Python; "
                        "see `referformer presets`)")
    return f"{info['backbone']}-{'release' if info['with_box_refine'] else 'default'}"


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


