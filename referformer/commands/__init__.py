"""The sub-commands of ``referformer``: one module each, with ``add_parser(subparsers)`` and ``run(args)``."""


def help_text(doc: str) -> str:
    """A module docstring as argparse shows it: reStructuredText's double backticks removed."""
    return doc.replace("``", "")
