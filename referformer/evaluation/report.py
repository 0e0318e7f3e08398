"""Output of evaluation results: one JSON object, or readable tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _finite_or_none(value: Any) -> Any:
    """Recursively replace NaN / inf floats by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _finite_or_none(value.item())
    return value


def to_json(result: Mapping[str, Any]) -> str:
    """One strict-JSON object (NaN written as ``null``), keys in insertion order."""
    return json.dumps(_finite_or_none(result), allow_nan=False)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 4) -> str:
    """Plain-text table of ``rows`` (dicts) restricted to ``columns``; floats with ``digits``."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body)
    return "\n".join(lines)


def format_metrics(metrics: Mapping[str, Any], digits: int = 4) -> str:
    """A one-row table of the scalar entries of ``metrics`` (nested values are skipped)."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return format_table([scalars], list(scalars), digits)


def format_report(protocol: str, result: Mapping[str, Any], max_rows: int = 50) -> str:
    """Readable summary of an evaluation ``result`` dict (the ``to_dict()`` of a result)."""
    lines = [f"{protocol} evaluation", "", format_metrics(result)]
    if protocol == "a2d":
        best = result.get("best_query", {})
        lines += ["", "COCO mAP with the best query only (one prediction per image):"]
        lines.append(format_metrics(best))
    details = {
        "davis": ("per_object", ["name", "gt_object", "pred_object", "J-Mean", "F-Mean"]),
        "a2d": ("per_sample", ["image_id", "iou", "intersection", "union", "score"]),
        "mevis": ("per_expression", ["name", "J", "F"]),
    }.get(protocol)
    if details and result.get(details[0]):
        rows = result[details[0]]
        lines += ["", f"{details[0].replace('_', ' ')} ({len(rows)}):"]
        lines.append(format_table(rows[:max_rows], details[1]))
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more (use --json for all)")
    return "\n".join(lines)
