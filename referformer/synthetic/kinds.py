"""Expression-kind labels: the ``expression_kinds.json`` format, its reader and writer.

Format (UTF-8 JSON, see docs/synthetic.md)::

    {"<video_id>": {"<exp_id>": {"kinds": ["category", "motion"], "trivial": false}, ...}, ...}

* ``<video_id>`` / ``<exp_id>``: the keys of ``meta_expressions.json``.
* ``kinds``: non-empty list, a subset of :data:`KINDS` (``category``, ``appearance``, ``location``,
  ``motion``, ``static_action``, ``interaction``): what the expression uses to single out its
  object (RefVOS taxonomy).
* ``trivial``: true when the referent's category alone identifies it (it is the only object of its
  category in the video).

The synthetic generator writes one file per split (``meta_expressions/<split>/expression_kinds.json``)
and one for all splits at the dataset root (``expression_kinds.json``); the same format can label a
real dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from referformer.errors import DatasetFormatError
from referformer.synthetic.grammar import KINDS

KINDS_FILENAME = "expression_kinds.json"


@dataclass(frozen=True)
class ExpressionLabel:
    """Kinds used by one expression (in :data:`KINDS` order) and whether it is trivial."""

    kinds: tuple[str, ...]
    trivial: bool

    @property
    def only(self) -> str | None:
        """The single kind if the expression uses exactly one (e.g. ``"motion"``), else None."""
        return self.kinds[0] if len(self.kinds) == 1 else None


ExpressionKinds = dict[str, dict[str, ExpressionLabel]]
"""``{video_id: {exp_id: ExpressionLabel}}``."""


def _parse_label(path: Path, video: str, exp_id: str, entry: object) -> ExpressionLabel:
    where = f"{path}: video {video!r} expression {exp_id!r}"
    if not isinstance(entry, dict) or "kinds" not in entry or "trivial" not in entry:
        raise DatasetFormatError(f"{where}: expected {{'kinds': [...], 'trivial': bool}}, got {entry!r}")
    kinds, trivial = entry["kinds"], entry["trivial"]
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise DatasetFormatError(f"{where}: 'kinds' must be a non-empty list of strings, got {kinds!r}")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise DatasetFormatError(f"{where}: unknown kind(s) {unknown}; allowed kinds are {list(KINDS)}")
    if not isinstance(trivial, bool):
        raise DatasetFormatError(f"{where}: 'trivial' must be true or false, got {trivial!r}")
    return ExpressionLabel(tuple(k for k in KINDS if k in kinds), trivial)


def read_expression_kinds(path: str | Path) -> ExpressionKinds:
    """Read and validate an ``expression_kinds.json`` file (raises DatasetFormatError if malformed)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: expression-kind labels not found (see docs/synthetic.md for the format)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: expected an object {{video_id: {{exp_id: {{...}}}}}}")
    out: ExpressionKinds = {}
    for video, exps in data.items():
        if not isinstance(exps, dict):
            raise DatasetFormatError(f"{path}: video {video!r} must map expression ids to labels")
        out[str(video)] = {str(e): _parse_label(path, video, e, v) for e, v in exps.items()}
    return out


def to_json(labels: Mapping[str, Mapping[str, ExpressionLabel]]) -> str:
    """Serialise labels (keys kept in the given order; deterministic text)."""
    data = {v: {e: {"kinds": list(lab.kinds), "trivial": lab.trivial} for e, lab in exps.items()}
            for v, exps in labels.items()}
    return json.dumps(data, indent=1) + "\n"


def write_expression_kinds(labels: Mapping[str, Mapping[str, ExpressionLabel]], path: str | Path) -> Path:
    """Write labels to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(labels), encoding="utf-8")
    return path


def expression_groups(labels: ExpressionKinds) -> dict[str, list[tuple[str, str]]]:
    """``(video_id, exp_id)`` lists per reporting group.

    Groups: ``all``, ``trivial``, ``non_trivial``, ``<kind>`` (expressions using that kind) and
    ``only_<kind>`` (expressions using that kind alone, e.g. ``only_motion``). Groups that would be
    empty are left out.
    """
    groups: dict[str, list[tuple[str, str]]] = {"all": [], "trivial": [], "non_trivial": []}
    for kind in KINDS:
        groups[kind] = []
        groups[f"only_{kind}"] = []
    for video, exps in labels.items():
        for exp_id, lab in exps.items():
            key = (video, exp_id)
            groups["all"].append(key)
            groups["trivial" if lab.trivial else "non_trivial"].append(key)
            for kind in lab.kinds:
                groups[kind].append(key)
            if lab.only is not None:
                groups[f"only_{lab.only}"].append(key)
    return {name: keys for name, keys in groups.items() if keys}


def merge_expression_kinds(parts: Iterable[ExpressionKinds]) -> ExpressionKinds:
    """Union of several label sets (e.g. one per split); a video present twice is an error."""
    out: ExpressionKinds = {}
    for part in parts:
        for video, exps in part.items():
            if video in out:
                raise DatasetFormatError(f"video {video!r} is labelled in more than one expression-kinds file")
            out[video] = dict(exps)
    return out
