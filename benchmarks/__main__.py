"""``python -m benchmarks NAME [ARGS]``: run ``benchmarks/NAME.py`` (inference, training_step, data_loaders)."""

from __future__ import annotations

import importlib
import sys

NAMES = ("inference", "training_step", "data_loaders")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in NAMES:
        print(f"usage: python -m benchmarks {{{','.join(NAMES)}}} [ARGS]  (--help after a name for its options)")
        return 2
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
