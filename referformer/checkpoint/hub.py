"""Our model folders on the Hugging Face Hub: ``push_to_hub`` shares one, ``hf://owner/repo`` loads one.

``load_model("hf://owner/repo")`` (and every ``--checkpoint``) resolves through
:func:`resolve_hub_uri`: ``huggingface_hub.snapshot_download`` brings the folder into the Hugging
Face cache once (``hf://owner/repo@revision`` pins a branch, tag or commit) and later uses it with
no network; offline (``REFERFORMER_OFFLINE`` / ``HF_HUB_OFFLINE``) only the cache is read.

:func:`push_to_hub` uploads a folder written by ``save_pretrained`` (or a model, saved first) in one
commit, with a model card (:mod:`.card`) from its config and evaluation reports.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch import nn

from referformer.checkpoint.card import CARD_FILE, model_card
from referformer.checkpoint.pretrained import CONFIG_FILE, WEIGHTS_FILE, save_pretrained
from referformer.errors import UserError
from referformer.text import TOKENIZER_FILES, offline_mode

HF_SCHEME = "hf://"
_URI = re.compile(r"^hf://([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?/?$")
# cache-local files of a folder that are not part of the model
_NOT_UPLOADED = ("manifest.json", CARD_FILE)


def is_hub_uri(name: str | Path) -> bool:
    """True for ``hf://...`` strings."""
    return isinstance(name, str) and name.startswith(HF_SCHEME)


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """``"hf://owner/repo@rev"`` -> ``("owner/repo", "rev")`` (revision None when absent)."""
    match = _URI.match(uri)
    if match is None:
        raise UserError(f"{uri!r} is not a Hub model address; write hf://OWNER/REPO or hf://OWNER/REPO@REVISION")
    return match.group(1), match.group(2)


def resolve_hub_uri(uri: str) -> Path:
    """The local folder of the Hub model ``uri`` (downloaded into the Hugging Face cache when missing)."""
    from huggingface_hub import snapshot_download

    from referformer import __version__

    repo_id, revision = parse_hub_uri(uri)
    offline = offline_mode()
    try:
        folder = Path(snapshot_download(repo_id=repo_id, revision=revision, local_files_only=offline,
                                        library_name="referformer", library_version=__version__))
    except (OSError, ValueError) as err:  # huggingface_hub's errors derive from these
        if offline:
            raise UserError(f"{uri} is not in the Hugging Face cache and downloads are off (REFERFORMER_OFFLINE / "
                            f"HF_HUB_OFFLINE); on a machine with a network run `huggingface-cli download {repo_id}` "
                            "and copy ~/.cache/huggingface (or $HF_HOME) to this machine") from err
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"could not fetch {uri} from the Hugging Face Hub: {reason}") from err
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{uri} is not a referformer model (no {CONFIG_FILE} in the repository); push one with "
                        "referformer.checkpoint.push_to_hub")
    return folder


def _save_model(model: nn.Module, directory: Path) -> Path:
    """``save_pretrained`` of a loaded model, with the tokenizer folder saved beside its checkpoint."""
    folder = save_pretrained(model, directory)
    origin = getattr(model, "checkpoint_path", None)
    tokenizer = Path(origin) / "tokenizer" if origin is not None else None
    if tokenizer is not None and any((tokenizer / f).is_file() for f in TOKENIZER_FILES):
        shutil.copytree(tokenizer, folder / "tokenizer")
    return folder


def push_to_hub(model_or_folder: nn.Module | str | Path, repo_id: str, *,
                reports: Iterable[str | Path | Mapping[str, Any]] = (), private: bool = False,
                token: str | None = None, commit_message: str | None = None, revision: str | None = None) -> str:
    """Upload one of our folders (or a model, saved with ``save_pretrained`` first) to the Hub repo
    ``repo_id`` (created if needed) in one commit, with a ``README.md`` model card written from its
    config and ``reports`` (evaluation ``report.json`` files or dicts; ``report.json`` in the
    folder is used too). Returns the commit URL. Load it back with ``load_model("hf://" + repo_id)``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="referformer-push-") as tmp:
        if isinstance(model_or_folder, nn.Module):
            folder = _save_model(model_or_folder, Path(tmp) / "model")
        else:
            folder = Path(model_or_folder)
            if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
                raise UserError(f"{folder} is not one of our model folders ({CONFIG_FILE} + {WEIGHTS_FILE}); write "
                                "one with save_pretrained or `referformer convert`")
        card = model_card(folder, reports, repo_id=repo_id).encode("utf-8")
        operations = [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card)]
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder)
            if relative.as_posix() in _NOT_UPLOADED or any(part.startswith(".") for part in relative.parts):
                continue
            operations.append(CommitOperationAdd(path_in_repo=relative.as_posix(), path_or_fileobj=str(path)))
        from referformer import __version__

        api = HfApi(token=token, library_name="referformer", library_version=__version__)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message or "Upload referformer model",
                                 revision=revision)
    return str(getattr(info, "commit_url", info))
