"""The local cache of downloaded checkpoints: where it is, what an entry is, and how one appears.

Layout (``$REFERFORMER_HOME``, default ``$XDG_CACHE_HOME/referformer`` or ``~/.cache/referformer``)::

    models/<name>/          one of our folders (config.json, model.safetensors, README.md, tokenizer/)
        manifest.json       where it came from: source, size and sha256 of the file seen, when
    downloads/<file>.part   a download in progress (resumed by the next attempt; never loaded)
    locks/<name>.lock       held while <name> is fetched, so two processes end with one copy

An entry is built in ``models/.staging-<name>@*`` and renamed into place in one step
(:func:`publish`), so ``models/<name>`` either is complete or does not exist: an interrupted
download or conversion never leaves something that passes for a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from referformer.errors import UserError

HOME_VARIABLE = "REFERFORMER_HOME"
MANIFEST_FILE = "manifest.json"
_ENTRY_FILES = (MANIFEST_FILE, "config.json", "model.safetensors")
_STAGING = ".staging-"


def referformer_home() -> Path:
    """``$REFERFORMER_HOME``, else ``$XDG_CACHE_HOME/referformer``, else ``~/.cache/referformer``."""
    if os.environ.get(HOME_VARIABLE):
        return Path(os.environ[HOME_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "referformer"


def models_dir() -> Path:
    """Folder of the cached models (``<home>/models``)."""
    return referformer_home() / "models"


def downloads_dir() -> Path:
    """Folder of downloads in progress (``<home>/downloads``), created."""
    path = referformer_home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def entry_dir(name: str) -> Path:
    """Where the cached model ``name`` lives (it may not exist)."""
    if not name or any(c in name for c in "/\\@") or name.startswith("."):
        raise UserError(f"{name!r} cannot be a cached model name (no slash, backslash or @, no leading dot)")
    return models_dir() / name


def is_cached(name: str) -> bool:
    """True when ``models/<name>`` is a complete entry (manifest, config and weights)."""
    folder = entry_dir(name)
    return all((folder / f).is_file() for f in _ENTRY_FILES)


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of the cached model ``name``, or None when it is not cached (or unreadable)."""
    if not is_cached(name):
        return None
    try:
        data = json.loads((entry_dir(name) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` (an entry being staged)."""
    path = Path(folder) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def entry_lock(name: str) -> Iterator[None]:
    """Hold ``locks/<name>.lock`` (across processes); says so on stderr when another process has it."""
    from filelock import FileLock, Timeout

    locks = referformer_home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process fetching {name} ({lock.lock_file})", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def new_staging_dir(name: str) -> Path:
    """An empty folder beside the entries where ``name`` is built before :func:`publish`."""
    models = models_dir()
    models.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_STAGING}{name}@", dir=models))


def clean_stale(name: str) -> None:
    """Remove what a killed process left for ``name``: staging folders, and an entry missing files
    (call with the entry's lock held)."""
    models = models_dir()
    if models.is_dir():
        for leftover in models.glob(f"{_STAGING}{name}@*"):
            shutil.rmtree(leftover, ignore_errors=True)
    folder = entry_dir(name)
    if folder.exists() and not is_cached(name):
        shutil.rmtree(folder, ignore_errors=True)


def publish(staging: Path, name: str, replace: bool = False) -> Path:
    """Rename the complete ``staging`` folder to ``models/<name>`` in one step (``replace``: after
    removing the entry there); returns the entry."""
    folder = entry_dir(name)
    if folder.exists():
        if not replace:
            raise UserError(f"{folder} already exists; remove it (or pass --force) to fetch {name} again")
        remove_entry(name)
    os.replace(staging, folder)
    return folder


def remove_entry(name: str) -> bool:
    """Delete the cached model ``name`` (with its lock held); True if there was one."""
    folder = entry_dir(name)
    if not folder.exists():
        return False
    # rename first, so a half-deleted folder never sits under the entry's name
    trash = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{name}@", dir=models_dir()))
    os.replace(folder, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)
    return True


def cached_names() -> list[str]:
    """Names of the complete entries in the cache, sorted."""
    models = models_dir()
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.startswith(".") and is_cached(p.name))
