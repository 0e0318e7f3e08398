"""Scores broken down by expression kind and by trivial / non-trivial expressions.

Labels are ``expression_kinds.json`` files (format in ``docs/synthetic.md``); groups come from
:func:`referformer.synthetic.kinds.expression_groups` (``all``, ``trivial``, ``non_trivial``, one
per kind, ``only_<kind>``). A group's ``J`` / ``F`` are means over its expressions of the
per-expression J and F (each expression weighs the same, as the MeViS evaluator averages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from referformer.synthetic.kinds import KINDS_FILENAME, expression_groups, read_expression_kinds

__all__ = ["find_kinds_file", "group_scores"]


def find_kinds_file(root: Path, split: str) -> Path | None:
    """The labels of a dataset split, if any: ``meta_expressions/<split>/expression_kinds.json``,
    ``<split>/expression_kinds.json`` or ``expression_kinds.json`` at the root (first found)."""
    for path in (root / "meta_expressions" / split / KINDS_FILENAME, root / split / KINDS_FILENAME,
                 root / KINDS_FILENAME):
        if path.is_file():
            return path
    return None


def group_scores(per_expression: Sequence[Mapping[str, Any]], labels_path: Path) -> dict[str, Any]:
    """``{group: {"J&F", "J", "F", "count"}}`` over the scored expressions, plus ``"unlabelled"``.

    ``per_expression`` rows hold ``video``, ``expression``, ``J``, ``F``. Labels of expressions that
    were not scored are ignored; scored expressions without a label count in ``unlabelled`` only.
    """
    labels = read_expression_kinds(labels_path)
    scores = {(row["video"], row["expression"]): (row["J"], row["F"]) for row in per_expression}
    labelled = {(v, e) for v, exps in labels.items() for e in exps}
    groups: dict[str, Any] = {}
    for name, keys in expression_groups(labels).items():
        values = [scores[k] for k in keys if k in scores]
        if not values:
            continue
        j = float(np.mean([v[0] for v in values]))
        f = float(np.mean([v[1] for v in values]))
        groups[name] = {"J&F": (j + f) / 2, "J": j, "F": f, "count": len(values)}
    return {"labels": str(labels_path), "unlabelled": sum(k not in labelled for k in scores), "groups": groups}
