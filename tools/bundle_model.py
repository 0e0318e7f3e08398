"""Copy an exported model folder into the package as a bundled model, its frozen parts stored once.

    python tools/bundle_model.py MODEL_DIR NAME [--share text_encoder=all-MiniLM-L6-v2 ...]

Writes ``referformer/assets/NAME`` (``config.json``, ``model.safetensors``, ``tokenizer/``...): each
``--share MODULE=PART`` stores ``MODULE``'s tensors once as ``referformer/assets/shared/PART`` (kept if
it is already there with the same values; refused if the values differ) and leaves them out of the
folder's weights, whose ``config.json`` then names the part (``"shared"``, see
``referformer.checkpoint.shared``). Then register ``NAME`` in
``referformer.checkpoint.registry.BUNDLED_MODELS``. Prints the package data's size: bundled models
together must stay under 100 MB (PyPI's default upload limit; tests/test_package_data.py checks it).

A developer utility beside the package (not installed with it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "referformer" / "assets"


def bundle(source: Path, name: str, shared: dict[str, str]) -> Path:
    """``source`` (a ``save_pretrained`` folder holding all its tensors) -> ``assets/name``; returns it. The
    weights are written again in half precision (as every bundled model; an exported fp16 folder keeps
    its values exactly) by ``save_pretrained``, without the ``shared`` modules' tensors, with the source's
    ``config.json`` contents; the other files (``tokenizer/``...) are copied."""
    from referformer.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model, read_pretrained_config, save_pretrained
    from referformer.checkpoint.shared import write_shared_part

    model = load_model(source)
    for prefix, part in shared.items():
        write_shared_part(model.get_submodule(prefix), part)  # referformer/assets/shared/PART
    target = ASSETS / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(CONFIG_FILE, WEIGHTS_FILE))
    _, metadata = read_pretrained_config(source)
    save_pretrained(model.half(), target, metadata=metadata, inference=model.inference_settings, shared=shared)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # package data readable by everyone
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="an exported model folder (all tensors inside)")
    parser.add_argument("name", help="the bundled name (folder under referformer/assets)")
    parser.add_argument("--share", action="append", default=[], metavar="MODULE=PART",
                        help="store MODULE's tensors once, as referformer/assets/shared/PART")
    args = parser.parse_args(argv)
    shared = dict(item.split("=", 1) for item in args.share)
    target = bundle(args.source, args.name, shared)
    sizes: dict[str, int] = {}
    for path in ASSETS.rglob("*"):
        if path.is_file():
            parts = path.relative_to(ASSETS).parts
            key = "/".join(parts[:2]) if parts[0] == "shared" else parts[0]
            sizes[key] = sizes.get(key, 0) + path.stat().st_size
    print(f"bundled {args.name}: {target}")
    for key, size in sorted(sizes.items()):
        print(f"  {key:32s} {size / 1e6:6.1f} MB")
    print(f"  {'total':32s} {sum(sizes.values()) / 1e6:6.1f} MB (limit 100)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
