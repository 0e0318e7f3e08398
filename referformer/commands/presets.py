"""``referformer presets``: the named model configurations (one per published checkpoint), the
published checkpoints (official numbers, size, whether cached) and the bundled models."""

from __future__ import annotations

import argparse
from typing import Any

from referformer.commands import help_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list model presets and published checkpoints",
                              description=help_text(__doc__))
    p.add_argument("--json", action="store_true", help="print the full configs as JSON")
    p.set_defaults(run=run)


def _published() -> dict[str, dict[str, Any]]:
    """name -> what ``presets`` shows of a published checkpoint (size: the cached weights', else the
    float32 size of its parameters)."""
    from referformer.checkpoint.install import cached_status
    from referformer.checkpoint.zoo import PUBLISHED

    out = {}
    for name, entry in PUBLISHED.items():
        status = cached_status(name)
        out[name] = {**status, "preset": entry.preset, "backbone": entry.backbone, "dataset": entry.dataset,
                     "results": dict(entry.results), "results_line": entry.results_line(), "note": entry.note,
                     "drive_id": entry.drive_id,
                     "source_url": entry.source_url, "size": status["size"] or entry.approx_bytes(),
                     "size_estimated": not status["cached"]}
    return out


def _size(entry: dict[str, Any]) -> str:
    if not entry["size"]:
        return "?"
    return f"{'~' if entry['size_estimated'] else ''}{entry['size'] / 1e6:,.0f} MB"


def run(args: argparse.Namespace) -> int:
    import json

    from referformer.checkpoint import BUNDLED_MODELS, bundled_model_dir, read_inference_settings, read_pretrained_config
    from referformer.checkpoint.cache import referformer_home
    from referformer.presets import list_presets

    presets = list_presets()
    bundled = {}
    for name in sorted(BUNDLED_MODELS):
        folder = bundled_model_dir(name)
        config, metadata = read_pretrained_config(folder)
        bundled[name] = {"folder": str(folder), "description": metadata.get("description", ""),
                         "inference": read_inference_settings(folder).to_dict(), "config": config.to_dict()}
    published = _published()
    if args.json:
        print(json.dumps({"presets": {p.name: {"description": p.description, "dataset": p.dataset,
                                               "official_file": p.official_file, "config": p.config.to_dict()}
                                      for p in presets},
                          "published": published, "cache": str(referformer_home()),
                          "bundled": bundled}, indent=2))
        return 0
    width = max(len(p.name) for p in presets)
    print("presets (architectures; an official .pth or a folder supplies the weights):")
    for p in presets:
        file = f"  ({p.official_file})" if p.official_file else ""
        print(f"  {p.name:<{width}}  {p.config.backbone:<18} {p.description}{file}")
    print(f"\npublished checkpoints (--checkpoint NAME downloads, verifies and converts one on first use; "
          f"`referformer download NAME` does it ahead of time; cache {referformer_home()}):")
    wide = max(len(name) for name in published)
    for name, entry in published.items():
        results = "; ".join(x for x in (entry["results_line"], entry["note"]) if x)
        cached = "cached" if entry["cached"] else "-"
        print(f"  {name:<{wide}}  {entry['backbone']:<13} {_size(entry):>9}  {cached:<6}  {results}")
    print("\nbundled models (weights inside the package; --checkpoint NAME):")
    for name, entry in bundled.items():
        s = entry["inference"]
        print(f"  {name:<{width}}  {entry['config'].get('backbone', ''):<18} short side {s['short_side']}, "
              f"window {s['window']}, query {s['query_policy']}")
    return 0
