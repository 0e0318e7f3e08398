"""Parts stored once for several model folders (``referformer.checkpoint.shared``): a folder saved with
``shared={"text_encoder": PART}`` keeps no ``text_encoder.*`` tensor, loads back equal to the model it was
saved from, refuses a module that differs from its part, and says what is missing when the part is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from referformer.checkpoint import load_model, read_state_dict, save_pretrained
from referformer.checkpoint import shared as shared_module
from referformer.checkpoint.shared import write_shared_part
from referformer.presets import tiny_config
from referformer.errors import CheckpointMismatchError, UserError
from referformer.models import build_model

PART = "tiny-text-encoder"


@pytest.fixture
def shared_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shared parts in a temporary folder instead of the package's assets/shared."""
    root = tmp_path / "shared"
    monkeypatch.setattr(shared_module, "SHARED_DIR", root)
    return root


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny_config()).eval()


def test_a_folder_with_a_shared_part_loads_back_equal(tmp_path: Path, shared_root: Path, one_thread) -> None:
    model = _model()
    write_shared_part(model.text_encoder, PART, dtype=torch.float32)
    folder = save_pretrained(model, tmp_path / "model", shared={"text_encoder": PART})
    stored = load_file(str(folder / "model.safetensors"))
    assert stored and not any(k.startswith("text_encoder.") for k in stored)
    assert json.loads((folder / "config.json").read_text())["shared"] == {"text_encoder": PART}
    full = save_pretrained(model, tmp_path / "full")
    assert (folder / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    loaded = load_model(folder)
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    # read_state_dict (what --init reads) fills the part in too
    state = read_state_dict(folder)
    assert all(torch.equal(state[k], v) for k, v in expected.items() if k.startswith("text_encoder."))


def test_a_changed_module_is_not_the_shared_part(tmp_path: Path, shared_root: Path, one_thread) -> None:
    model = _model()
    write_shared_part(model.text_encoder, PART, dtype=torch.float32)
    write_shared_part(model.text_encoder, PART, dtype=torch.float32)  # the same values again: accepted
    with torch.no_grad():
        next(model.text_encoder.parameters()).add_(1e-3)  # fine-tuned: no longer the part
    with pytest.raises(CheckpointMismatchError, match="other values"):
        save_pretrained(model, tmp_path / "model", shared={"text_encoder": PART})
    with pytest.raises(CheckpointMismatchError, match="other values"):
        write_shared_part(model.text_encoder, PART, dtype=torch.float32)  # a part is never overwritten


def test_missing_or_foreign_parts_are_clear_errors(tmp_path: Path, shared_root: Path, one_thread) -> None:
    model = _model()
    write_shared_part(model.text_encoder, PART, dtype=torch.float32)
    folder = save_pretrained(model, tmp_path / "model", shared={"text_encoder": PART})
    config = json.loads((folder / "config.json").read_text())
    config["shared"] = {"text_encoder": "not-installed"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="'not-installed' is missing"):
        load_model(folder)
    config["shared"] = {"text_encoder": "../escape"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not a plain folder name"):
        load_model(folder)
    config["shared"] = {"backbone": PART}  # the text encoder's tensors do not fit the backbone
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="does not fit 'backbone'"):
        load_model(folder)
