"""Parts that several model folders hold byte for byte, stored once (our format; hand-written because no
library stores one module's tensors for several safetensors folders).

A frozen text encoder (all-MiniLM-L6-v2 in the bundled models) is the same in every model that uses it
frozen. A folder whose ``config.json`` has ``"shared": {"text_encoder": "all-MiniLM-L6-v2"}`` keeps no
``text_encoder.*`` tensor in its ``model.safetensors``; the loader fills that module from the shared part
``referformer/assets/shared/all-MiniLM-L6-v2/model.safetensors`` (the module's own keys, e.g. ``BertModel``'s)
before it checks that every key of the model was loaded. So the package data of the bundled models grows
by each model's own weights only (docs/weights.md, "Bundled models").

:func:`write_shared_part` makes a part from a module, :func:`strip_shared_parts` removes a part's tensors
from a folder's weights after checking they equal the stored part, :func:`load_shared_parts` fills them in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from referformer.errors import CheckpointMismatchError, UserError

__all__ = ["SHARED_DIR", "load_shared_parts", "read_shared_part", "shared_part_dir", "strip_shared_parts",
           "write_shared_part"]

SHARED_DIR = Path(__file__).resolve().parent.parent / "assets" / "shared"
PART_FILE = "model.safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def shared_part_dir(name: str, root: Path | None = None) -> Path:
    """The folder of shared part ``name`` under ``root`` (default: the package's ``assets/shared``);
    ``UserError`` for a name that is not a plain folder name or a part that is not installed."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"shared part name {name!r} is not a plain folder name")
    folder = (root or SHARED_DIR) / name
    if not (folder / PART_FILE).is_file():
        raise UserError(f"shared part {name!r} is missing from this installation ({folder / PART_FILE}); "
                        "reinstall referformer")
    return folder


def read_shared_part(name: str, root: Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of shared part ``name`` (keys of the module it was written from)."""
    from safetensors.torch import load_file

    return load_file(str(shared_part_dir(name, root) / PART_FILE))


def write_shared_part(module: nn.Module, name: str, root: Path | None = None,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Store ``module``'s state dict (floating tensors cast to ``dtype``) as shared part ``name``; a part
    already there must hold exactly these tensors (``CheckpointMismatchError`` otherwise: a part is never
    overwritten, every folder that names it would change). Returns the part's folder."""
    from safetensors.torch import save_file

    if not _NAME.match(name):
        raise UserError(f"shared part name {name!r} is not a plain folder name")
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    folder = (root or SHARED_DIR) / name
    if (folder / PART_FILE).is_file():
        _check_equal(state, read_shared_part(name, root), f"shared part {name!r}")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / PART_FILE), metadata={"format": "pt"})
    (folder / PART_FILE).chmod(0o644)
    return folder


def strip_shared_parts(weights: Path, shared: Mapping[str, str], root: Path | None = None) -> None:
    """Remove from the safetensors file ``weights`` the tensors of each ``prefix -> part`` of ``shared``,
    after checking that they equal the part's (``CheckpointMismatchError`` when a module was changed, e.g.
    fine-tuned: such a module is not the shared part and must stay in the folder)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    for prefix, name in shared.items():
        part = read_shared_part(name, root)
        own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        _check_equal(own, part, f"{weights}: {prefix}.* against shared part {name!r}")
        tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix + ".")}
    save_file(tensors, str(weights), metadata={"format": "pt"})


def load_shared_parts(model: nn.Module, shared: Mapping[str, str], root: Path | None = None) -> set[str]:
    """Load each ``prefix -> part`` of ``shared`` into ``model.get_submodule(prefix)`` (every key of the
    module required, values cast to its dtype). Returns the model keys that were filled."""
    filled: set[str] = set()
    for prefix, name in shared.items():
        try:
            module = model.get_submodule(prefix)
        except AttributeError as err:
            raise CheckpointMismatchError(f"shared part {name!r} is for {prefix!r}, which this model lacks") from err
        own = module.state_dict()
        part = read_shared_part(name, root)
        wrong = sorted(set(own) ^ set(part)) + [k for k in own if k in part and own[k].shape != part[k].shape]
        if wrong:
            raise CheckpointMismatchError(f"shared part {name!r} does not fit {prefix!r}: {wrong[:3]}")
        with torch.no_grad():
            module.load_state_dict({k: v.to(own[k].dtype) for k, v in part.items()}, strict=True)
        filled |= {f"{prefix}.{k}" for k in part}
    return filled


def _check_equal(ours: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor], what: str) -> None:
    if set(ours) != set(stored):
        raise CheckpointMismatchError(f"{what}: other keys ({sorted(set(ours) ^ set(stored))[:3]})")
    different = [k for k, v in ours.items() if v.shape != stored[k].shape or not torch.equal(v.to(stored[k].dtype),
                                                                                               stored[k])]
    if different:
        raise CheckpointMismatchError(f"{what}: other values in {different[:3]} (a changed module is not the "
                                      "shared part; keep it in the folder)")
