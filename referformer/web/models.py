"""The models a ``referformer serve`` page offers, and the loaded predictors behind them.

:class:`ModelCatalog` lists, by the name the page's dropdown and the ``segment`` API take:

- the folders and files given with ``--checkpoint`` (named by their folder or file stem);
- the official model zoo present locally: the published checkpoints already downloaded into the
  cache (``$REFERFORMER_HOME``, :mod:`referformer.checkpoint.cache`; offered by their published
  name, loaded with no network), then, in ``--models-dir`` (default ``$REFERFORMER_MODELS``, else
  ``./models`` when it exists), an official ``.pth`` whose file name is a preset's
  (``ytvos_r50.pth`` -> ``ytvos-r50``) and every converted folder (``config.json`` +
  ``model.safetensors``, as ``referformer convert --out models/ytvos-r50`` writes it);
- the models bundled with the package (``synthetic-tiny``).

:class:`PredictorCache` loads a model the first time a run asks for it and keeps the latest
``capacity`` of them (one by default: an official checkpoint is hundreds of megabytes).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referformer.checkpoint import (BUNDLED_MODELS, CONFIG_FILE, PUBLISHED, WEIGHTS_FILE, bundled_model_dir,
                                    resolve_checkpoint)
from referformer.checkpoint.cache import entry_dir, is_cached
from referformer.checkpoint.pretrained import SEGMENTATION_MODEL_TYPES, folder_model_type
from referformer.errors import UserError
from referformer.presets import preset_for_file

MODELS_DIR_ENV = "REFERFORMER_MODELS"
DEFAULT_MODELS_DIR = "models"


@dataclass(frozen=True)
class ModelEntry:
    """One choice of the page: ``name`` (what the dropdown and the API take), ``source`` (a bundled
    name, a folder or a weights file for ``engines.load_predictor``), ``preset`` (architecture
    of an official ``.pth``, else ``None``) and ``origin`` (``checkpoint``, ``local`` or ``bundled``)."""

    name: str
    source: str
    preset: str | None
    origin: str

    @property
    def label(self) -> str:
        """What the dropdown shows: the name and where the model comes from."""
        return f"{self.name} ({self.origin})"


def default_models_dir() -> Path | None:
    """``$REFERFORMER_MODELS``, else ``./models`` when it is a folder, else ``None``."""
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(DEFAULT_MODELS_DIR) if Path(DEFAULT_MODELS_DIR).is_dir() else None


def _is_model_folder(path: Path) -> bool:
    """A saved model that answers sentences (a propagator folder is not offered)."""
    return ((path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
            and folder_model_type(path) in SEGMENTATION_MODEL_TYPES)


def downloaded_models() -> list[ModelEntry]:
    """The published checkpoints already in the local cache (``referformer download``, or a first
    ``--checkpoint NAME``), by their published name."""
    return [ModelEntry(name, name, None, "official") for name in PUBLISHED if is_cached(name)]


def _same_model(entry: ModelEntry, other: ModelEntry) -> bool:
    if entry.source == other.source:
        return True
    if entry.origin == "official":  # a --checkpoint NAME of the cache resolves to its folder
        return other.source == str(entry_dir(entry.name))
    return False


def local_models(models_dir: str | Path) -> list[ModelEntry]:
    """The official checkpoints (by preset file name) and converted folders found in ``models_dir``."""
    folder = Path(models_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"models folder not found: {folder} (--models-dir or ${MODELS_DIR_ENV})")
    entries = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and _is_model_folder(path):
            entries.append(ModelEntry(path.name, str(path), None, "local"))
        elif path.is_file() and path.suffix == ".pth" and (preset := preset_for_file(path.name)) is not None:
            entries.append(ModelEntry(preset.name, str(path), preset.name, "local"))
    return entries


class ModelCatalog:
    """The models of a page, in the dropdown's order (the first is the default)."""

    def __init__(self, entries: Sequence[ModelEntry]) -> None:
        if not entries:
            raise UserError("no model to serve: pass --checkpoint NAME_OR_PATH")
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            name, n = entry.name, 2
            while name in self._entries:  # two folders with the same name: the second is NAME-2
                name, n = f"{entry.name}-{n}", n + 1
            self._entries[name] = ModelEntry(name, entry.source, entry.preset, entry.origin)

    @classmethod
    def discover(cls, checkpoints: Sequence[str] = (), models_dir: str | Path | None = None) -> ModelCatalog:
        """``--checkpoint`` values (each must resolve: ``UserError`` otherwise), then the published
        checkpoints in the cache, the models of ``models_dir`` (default :func:`default_models_dir`)
        and the bundled models."""
        entries = []
        for value in checkpoints:
            path = resolve_checkpoint(value)  # a path, a bundled or published name, hf://...; else UserError
            if value in BUNDLED_MODELS:
                entries.append(ModelEntry(value, value, None, "bundled"))
            else:
                name = path.name if path.is_dir() else path.stem
                entries.append(ModelEntry(name, str(path), None, "checkpoint"))
        entries.extend(e for e in downloaded_models() if not any(_same_model(e, c) for c in entries))
        folder = Path(models_dir) if models_dir is not None else default_models_dir()
        if folder is not None:
            entries.extend(local_models(folder))
        for name in sorted(BUNDLED_MODELS):
            try:
                folder = bundled_model_dir(name)
            except UserError:  # weights missing from this installation: not offered
                continue
            if folder_model_type(folder) not in SEGMENTATION_MODEL_TYPES:  # e.g. propagator-tiny
                continue
            if not any(e.source == name for e in entries):
                entries.append(ModelEntry(name, name, None, "bundled"))
        return cls(entries)

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    @property
    def default(self) -> str:
        return self.names[0]

    def choices(self) -> list[tuple[str, str]]:
        """``(label, name)`` pairs for a dropdown."""
        return [(e.label, e.name) for e in self._entries.values()]

    def get(self, name: str | None) -> ModelEntry:
        """The entry called ``name``; ``UserError`` listing the choices when there is none."""
        key = (name or "").strip()
        if key not in self._entries:
            shown = repr(key) if key else "no model"
            raise UserError(f"unknown model {shown}: choose one of {', '.join(self.names)}")
        return self._entries[key]


class PredictorCache:
    """Loads predictors on first use (``engines.load_predictor(entry.source, preset=entry.preset,
    device=device)``) and keeps the ``capacity`` most recently used ones. Thread-safe."""

    def __init__(self, device: str = "auto", capacity: int = 1) -> None:
        self.device = device
        self.capacity = max(1, capacity)
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> Any:
        """The predictor of ``entry``; a checkpoint that cannot be loaded raises ``UserError``."""
        with self._lock:
            if entry.name in self._loaded:
                self._loaded.move_to_end(entry.name)
                return self._loaded[entry.name]
            from referformer.inference.engines import load_predictor  # imports torch

            try:
                predictor = load_predictor(entry.source, preset=entry.preset, device=self.device)
            except UserError as err:
                raise UserError(f"model {entry.name!r}: {err}") from err
            except Exception as err:  # a corrupt or foreign file: say which model, not a traceback
                first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"model {entry.name!r} ({entry.source}) could not be loaded: {first_line}") from err
            self._loaded[entry.name] = predictor
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
            return predictor
