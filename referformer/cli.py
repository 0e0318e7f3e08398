"""The ``referformer`` command line: a thin dispatcher over :mod:`referformer.commands`.

Each sub-command lives in its own module under ``referformer/commands/`` and exposes
``add_parser(subparsers)`` (registers its arguments) and ``run(args) -> int``. Errors that a user
can fix are raised as :class:`referformer.errors.UserError` and printed as one line, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from referformer import __version__
from referformer.errors import UserError

# Sub-command modules, in the order ``referformer --help`` lists them.
COMMANDS = (
    "demo",
    "segment",
    "propagate",
    "serve",
    "evaluate",
    "train",
    "synth",
    "convert",
    "download",
    "presets",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="referformer",
        description="Referring video object segmentation with ReferFormer.",
    )
    parser.add_argument("--version", action="version", version=f"referformer {__version__}")
    parser.add_argument("--offline", dest="offline_everywhere", action="store_true",
                        help="never use the network: no weights or tokenizer download (as REFERFORMER_OFFLINE=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"referformer.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``referformer`` executable; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.offline_everywhere:
        os.environ["REFERFORMER_OFFLINE"] = "1"  # read by the downloaders (referformer.text.offline_mode)
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"referformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"referformer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
