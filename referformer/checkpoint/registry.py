"""Models known by name: bundled with the package (weights inside the wheel), published by the
original authors (:mod:`.zoo`: downloaded, verified and converted into the cache on first use by
:mod:`.install`), and our folders on the Hugging Face Hub (``hf://owner/repo``, :mod:`.hub`).

Every place that accepts a checkpoint goes through :func:`resolve_checkpoint`, so a name listed
here works everywhere (``segment --checkpoint NAME``, ``evaluate``, ``Predictor.from_pretrained``).
"""

from __future__ import annotations

from pathlib import Path

from referformer.checkpoint.hub import is_hub_uri, resolve_hub_uri
from referformer.checkpoint.install import fetch_published
from referformer.checkpoint import zoo
from referformer.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# name -> folder relative to the package (config.json + model.safetensors + tokenizer/)
BUNDLED_MODELS: dict[str, str] = {
    # the model `referformer demo` runs: a small ReferFormer on the synthetic benchmark (recipe synthetic-tiny-v2:
    # ImageNet EfficientNet-Lite0, frozen all-MiniLM-L6-v2 stored once in assets/shared, motion-aware queries)
    "synthetic-tiny": "assets/synthetic-tiny",
    # the first one (recipe synthetic-tiny: ResNet-18 and RoBERTa from scratch, the original's architecture, so
    # it can be written in the official checkpoint format); the tests' small model of the original's kind
    "synthetic-tiny-v1": "assets/synthetic-tiny-v1",
    "propagator-tiny": "assets/propagator-tiny",  # a small mask propagator (recipes/propagator_tiny.py)
}


def bundled_model_dir(name: str) -> Path:
    """The folder of the bundled model ``name`` (a key of :data:`BUNDLED_MODELS`); ``UserError`` when
    the name is unknown or its weights are missing from this installation."""
    if name not in BUNDLED_MODELS:
        raise UserError(f"no bundled model named {name!r}; bundled: {', '.join(sorted(BUNDLED_MODELS))}")
    path = PACKAGE_DIR / BUNDLED_MODELS[name]
    if not (path / "model.safetensors").is_file():
        raise UserError(f"bundled model {name!r} is missing from this installation ({path}); reinstall referformer")
    return path


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The local path of a checkpoint given by path, by name, or by Hub address.

    In this order: a name of :data:`BUNDLED_MODELS`; an existing path (a converted model folder,
    an official ``.pth``, a ``.safetensors`` file); ``hf://owner/repo[@revision]``; a name of the
    published checkpoints (``ytvos-r50``..., see ``referformer presets``), fetched into the cache on
    first use (``$REFERFORMER_HOME``), then read from there with no network. Raises ``UserError``
    when nothing is found.
    """
    name = str(name_or_path)
    if name in BUNDLED_MODELS:
        return bundled_model_dir(name)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if is_hub_uri(name):
        return resolve_hub_uri(name)
    if name in zoo.PUBLISHED:
        return fetch_published(name)
    import difflib

    close = difflib.get_close_matches(name, [*zoo.PUBLISHED, *BUNDLED_MODELS], n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"checkpoint not found: {name}{hint}; pass a converted model folder, an official .pth file, "
                    f"hf://OWNER/REPO, a published name (`referformer presets`) or a bundled model "
                    f"({', '.join(sorted(BUNDLED_MODELS))})")
