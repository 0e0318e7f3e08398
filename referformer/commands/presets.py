"""``referformer presets``: list the named model configurations (one per published checkpoint)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list model presets", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the full configs as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from referformer.presets import list_presets

    presets = list_presets()
    if args.json:
        print(json.dumps({p.name: {"description": p.description, "dataset": p.dataset,
                                   "official_file": p.official_file, "config": p.config.to_dict()}
                          for p in presets}, indent=2))
        return 0
    width = max(len(p.name) for p in presets)
    for p in presets:
        status = "" if p.supported else "  [backbone not yet supported]"
        file = f"  ({p.official_file})" if p.official_file else ""
        print(f"{p.name:<{width}}  {p.config.backbone:<18} {p.description}{file}{status}")
    return 0
