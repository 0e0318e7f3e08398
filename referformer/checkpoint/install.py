"""A published checkpoint by name: download, verify, convert, cache, on first use.

:func:`fetch_published` is what ``resolve_checkpoint("ytvos-r50")`` (hence ``load_model``,
``Predictor.from_pretrained``, ``segment`` / ``evaluate --checkpoint``) and ``referformer download``
run. With the cache entry's lock held (:func:`.cache.entry_lock`, so two processes end with one
copy) it

1. downloads the official ``.pth`` (:mod:`.download`: Google Drive, or ``REFERFORMER_MIRROR``),
2. verifies it by loading it: ``torch.load(weights_only=True)`` (nothing that unpickles code is
   accepted), then every key and shape of the preset, nothing missing, nothing unexpected beyond
   the documented extras (``text_encoder.embeddings.position_ids``),
3. converts it to our folder format (``model.safetensors`` + ``config.json`` with the inference
   settings it was evaluated with + ``README.md``), with a ``manifest.json`` recording the source,
   size and sha256 of the file it saw,
4. publishes the folder in one rename and deletes the ``.pth``.

A file that fails any step leaves nothing in the cache. Afterwards the name resolves to the cached
folder with no network. Downloads are refused when :func:`referformer.text.offline_mode` is on.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from referformer.checkpoint import cache
from referformer.checkpoint.card import write_model_card
from referformer.checkpoint.download import fetch, sha256_file
from referformer.checkpoint.official import load_official_state_dict, safe_torch_load
from referformer.checkpoint.pretrained import (WEIGHTS_FILE, build_from_config, read_inference_settings,
                                               read_pretrained_config, save_pretrained)
from referformer.checkpoint.zoo import PublishedCheckpoint, get_published
from referformer.errors import CheckpointMismatchError, UserError
from referformer.text import TOKENIZER_FILES, fetch_tokenizer, offline_mode

_NOT_CACHED = "nothing was cached"


def offline_message(name: str) -> str:
    """Why ``name`` cannot be fetched now, and what to run where."""
    return (f"{name} is not in the cache ({cache.entry_dir(name)}) and downloads are off (REFERFORMER_OFFLINE / "
            f"HF_HUB_OFFLINE / --offline); on a machine with a network run `referformer download {name}` and copy "
            f"that folder to the same place here (or set REFERFORMER_HOME to a copy of the cache)")


def _tensor_state_dict(path: Path, name: str) -> dict[str, Tensor]:
    """The ``model`` state dict of a downloaded ``.pth``, read with ``weights_only=True``."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise UserError(f"{name}: the server sent a web page instead of the checkpoint (Google Drive quota or "
                        f"a wrong mirror URL?); {_NOT_CACHED}")
    hint = f"a published checkpoint holds tensors only, so this file is not {name}; {_NOT_CACHED}"
    try:
        ckpt = safe_torch_load(path, unsafe_hint=hint)
    except UserError as err:
        if "cannot be loaded safely" in str(err):  # pickled Python objects: refused, never run
            raise UserError(f"{name}: {err}") from err
        raise UserError(f"{name}: the downloaded file is not a readable PyTorch checkpoint (a damaged or "
                        f"incomplete download?); {_NOT_CACHED}") from err
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not (isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, Tensor) for v in ckpt.values())):
        found = list(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise UserError(f"{name}: the downloaded file holds no 'model' state dict (found {found}); {_NOT_CACHED}")
    return dict(ckpt)


def verify(entry: PublishedCheckpoint, path: Path) -> nn.Module:
    """The model of ``entry`` with the weights of the official file ``path``; ``UserError`` (one
    line) unless every key and shape is the preset's."""
    state_dict = _tensor_state_dict(path, entry.name)
    model = build_from_config(entry.model_config(), init_weights=False)
    try:
        load_official_state_dict(model, state_dict)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{entry.name}: the downloaded file is not a {entry.preset} checkpoint ({err}); "
                                      f"{_NOT_CACHED}") from err
    return model.eval()


def _convert(entry: PublishedCheckpoint, path: Path, source: str, replace: bool = False) -> Path:
    """Verify ``path`` and publish it as the cache entry of ``entry``; returns the entry's folder."""
    size, sha256 = sha256_file(path)
    if entry.sha256 is not None and sha256 != entry.sha256:
        raise UserError(f"{entry.name}: the downloaded file has sha256 {sha256}, expected {entry.sha256}; "
                        f"{_NOT_CACHED}")
    model = verify(entry, path)
    staging = cache.new_staging_dir(entry.name)
    try:
        metadata = {"name": entry.name, "preset": entry.preset, "dataset": entry.dataset, "backbone": entry.backbone,
                    "source": source, "official_file": entry.official_file, "sha256": sha256,
                    "official_results": dict(entry.results)}
        save_pretrained(model, staging, metadata=metadata, inference=entry.inference)
        del model
        write_model_card(staging)
        from referformer import __version__

        cache.write_manifest(staging, {
            "name": entry.name, "source": source, "drive_id": entry.drive_id, "file": entry.official_file,
            "size": size, "sha256": sha256, "preset": entry.preset,
            "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "weights": {"file": WEIGHTS_FILE, "size": (staging / WEIGHTS_FILE).stat().st_size},
            "referformer_version": __version__,
        })
        return cache.publish(staging, entry.name, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def fetch_published(name: str, *, progress: bool = True, source_file: str | Path | None = None,
                    force: bool = False) -> Path:
    """The cached folder of the published checkpoint ``name``, fetched and converted when missing.

    ``source_file``: install from this official ``.pth`` (downloaded by hand) instead of the network;
    ``force``: fetch again and replace an existing entry (once the new one is verified). Raises
    ``UserError`` (one line) when offline and not cached, on a failed download (a partial file is
    kept to resume) or a file that is not ``name``.
    """
    entry = get_published(name)
    if cache.is_cached(name) and not force:
        return cache.entry_dir(name)
    if source_file is None and offline_mode():
        raise UserError(offline_message(name))
    if source_file is not None and not Path(source_file).is_file():
        raise UserError(f"--file {source_file}: no such file (the official .pth of {name})")
    with cache.entry_lock(name):
        if cache.is_cached(name) and not force:
            return cache.entry_dir(name)  # another process fetched it while we waited
        cache.clean_stale(name)
        if source_file is not None:
            path, source = Path(source_file).resolve(), f"file://{Path(source_file).resolve()}"
        else:
            path = cache.downloads_dir() / f"{name}-{entry.drive_id}.pth"
            path.unlink(missing_ok=True)  # a complete file a killed process never converted: fetch again
            source = fetch(entry.drive_id, path, desc=name, progress=progress)
        try:
            return _convert(entry, path, source, replace=force)
        finally:
            if source_file is None:
                path.unlink(missing_ok=True)


def add_tokenizer(name: str) -> Path:
    """Save the tokenizer of the cached model ``name`` in its ``tokenizer/`` folder (fetched through
    the Hugging Face Hub when its settings name a Hub tokenizer) so the entry alone runs offline;
    returns where the tokenizer is."""
    folder = cache.entry_dir(name)
    target = folder / "tokenizer"
    if any((target / f).is_file() for f in TOKENIZER_FILES):
        return target
    config, _ = read_pretrained_config(folder)
    tokenizer = read_inference_settings(folder).tokenizer or config.text_encoder.tokenizer
    local = Path(tokenizer).expanduser()
    for candidate in (folder / tokenizer, local if local.is_absolute() else None):
        if candidate is not None and candidate.is_dir():
            return candidate  # a folder already: nothing to fetch
    fetched = fetch_tokenizer(tokenizer)
    with cache.entry_lock(name):
        if not target.exists():
            staging = Path(cache.new_staging_dir(name))
            for file in fetched.iterdir():
                if file.is_file():
                    shutil.copyfile(file, staging / file.name)  # the Hub cache holds symlinks
            staging.rename(target)
    return target


def cached_status(name: str) -> dict[str, Any]:
    """``{"cached": bool, "folder", "size", "sha256", "source", "fetched"}`` of ``name`` (manifest values
    when cached)."""
    manifest = cache.read_manifest(name) or {}
    return {"cached": bool(manifest), "folder": str(cache.entry_dir(name)),
            "size": manifest.get("weights", {}).get("size"), "sha256": manifest.get("sha256"),
            "source": manifest.get("source"), "fetched": manifest.get("fetched")}
