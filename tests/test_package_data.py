"""The package data (``referformer/assets``): every bundled model folder is registered, every shared part
a folder names is there, and all of it stays under PyPI's default upload limit of 100 MB."""

from __future__ import annotations

import json

from referformer.checkpoint.registry import BUNDLED_MODELS, PACKAGE_DIR
from referformer.checkpoint.shared import SHARED_DIR, shared_part_dir

ASSETS = PACKAGE_DIR / "assets"
LIMIT_BYTES = 100 * 1000 * 1000


def test_bundled_folders_are_registered_and_complete() -> None:
    folders = {p.name for p in ASSETS.iterdir() if p.is_dir() and p != SHARED_DIR}
    assert folders == {name for name in BUNDLED_MODELS}, "a bundled folder without a name, or a name without one"
    for name, relative in BUNDLED_MODELS.items():
        folder = PACKAGE_DIR / relative
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert (folder / "model.safetensors").is_file(), name
        for part in (config.get("shared") or {}).values():
            shared_part_dir(part)  # raises when missing


def test_package_data_stays_under_the_upload_limit() -> None:
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < LIMIT_BYTES, f"referformer/assets holds {total / 1e6:.1f} MB"
