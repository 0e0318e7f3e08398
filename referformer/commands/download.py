"""``referformer download NAME... | --all``: fetch published checkpoints into the cache ahead of time.

Each NAME (see ``referformer presets``) is downloaded (Google Drive, or ``REFERFORMER_MIRROR``),
verified by loading it, converted to our folder format and kept in ``$REFERFORMER_HOME`` (default
~/.cache/referformer), with its tokenizer, so ``--checkpoint NAME`` then works with no network.
``hf://OWNER/REPO`` names are fetched into the Hugging Face cache. ``--file`` installs an official
.pth downloaded by hand; ``--offline`` only checks that every NAME is ready to run offline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from referformer.commands import help_text
from referformer.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("download", help="download and convert published checkpoints ahead of time",
                              description=help_text(__doc__))
    p.add_argument("names", nargs="*", metavar="NAME", help="published checkpoint names or hf://OWNER/REPO")
    p.add_argument("--all", action="store_true", help="every published checkpoint (25 files, about 22 GB)")
    p.add_argument("--file", type=Path, default=None,
                   help="install this official .pth (downloaded by hand) as NAME instead of downloading it")
    p.add_argument("--force", action="store_true", help="fetch again and replace what is cached")
    p.add_argument("--offline", action="store_true",
                   help="download nothing: check that each NAME is cached (exit status 2 if one is not)")
    p.add_argument("--no-tokenizer", action="store_true", help="do not save the tokenizer with the model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _one(name: str, args: argparse.Namespace) -> str:
    """Fetch ``name``; returns the line to print."""
    from referformer.checkpoint.hub import is_hub_uri, resolve_hub_uri
    from referformer.checkpoint.install import add_tokenizer, cached_status, fetch_published

    if is_hub_uri(name):
        return f"{name}: {resolve_hub_uri(name)}"
    folder = fetch_published(name, progress=not args.quiet, source_file=args.file, force=args.force)
    status = cached_status(name)
    line = f"{name}: {folder}"
    if status["size"]:
        line += f" ({status['size'] / 1e6:,.0f} MB, sha256 of the original {str(status['sha256'])[:12]}...)"
    if not args.no_tokenizer:
        line += f"; tokenizer {add_tokenizer(name)}"
    return line


def run(args: argparse.Namespace) -> int:
    from referformer.checkpoint.zoo import PUBLISHED, get_published

    if args.all and args.names:
        raise UserError("give NAMEs or --all, not both")
    names = list(PUBLISHED) if args.all else args.names
    if not names:
        raise UserError("name the checkpoints to download (`referformer presets` lists them) or pass --all")
    if args.file is not None and len(names) != 1:
        raise UserError("--file installs one checkpoint: give exactly one NAME")
    for name in names:
        if not name.startswith("hf://"):
            get_published(name)  # unknown names fail before anything is downloaded
    offline_before = os.environ.get("REFERFORMER_OFFLINE")
    if args.offline:
        os.environ["REFERFORMER_OFFLINE"] = "1"
    failed = []
    try:
        for name in names:
            try:
                print(_one(name, args), flush=True)
            except UserError as err:
                if len(names) == 1:
                    raise
                print(f"referformer download: error: {err}", file=sys.stderr, flush=True)
                failed.append(name)
    finally:
        if args.offline:
            if offline_before is None:
                os.environ.pop("REFERFORMER_OFFLINE", None)
            else:
                os.environ["REFERFORMER_OFFLINE"] = offline_before
    if failed:
        raise UserError(f"{len(failed)} of {len(names)} failed: {', '.join(failed)} (run the command again to resume)")
    return 0
