"""Score paraphrases of the synthetic grammar's expressions next to the expressions they paraphrase.

A *paraphrase list* (``tests/data/synthetic_paraphrases.json``; docs/synthetic.md, "Paraphrases")
names the split it was written for and, per entry, a grammar expression of that split and a
hand-written paraphrase of it with words outside the grammar::

    {"generator": {"seed": 2718, "split": "test", "videos": 25, ...},
     "paraphrases": [{"video": "9bb3b084cc", "obj_id": "1", "grammar_expression": "the red triangle at the bottom",
                      "paraphrase": "the crimson wedge near the lower edge", "kinds": [...], "trivial": false}]}

:func:`write_paraphrase_split` turns it into a ``meta_expressions.json`` (and its
``expression_kinds.json``) over the same frames and masks holding exactly the paraphrased grammar
expressions (under their ids in the split) and the paraphrases (new ids, after the video's largest),
so that the ordinary evaluation (``referformer evaluate --dataset synthetic --paraphrases FILE``)
scores both; :func:`paraphrase_scores` then splits its per-expression rows into the two sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from referformer.errors import DatasetFormatError, UserError
from referformer.evaluation.drivers.runner import atomic_write_text

__all__ = ["paraphrase_scores", "paraphrase_split", "read_paraphrases", "write_paraphrase_split"]

ENTRY_KEYS = ("video", "obj_id", "grammar_expression", "paraphrase", "kinds", "trivial")


def read_paraphrases(path: str | Path) -> dict[str, Any]:
    """The paraphrase list at ``path``, checked for its keys (``DatasetFormatError`` names the entry)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"paraphrase list {path}: file not found (format: docs/synthetic.md, 'Paraphrases')")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("paraphrases"), list) or not data["paraphrases"]:
        raise DatasetFormatError(f"{path}: needs a non-empty 'paraphrases' list")
    for i, entry in enumerate(data["paraphrases"]):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DatasetFormatError(f"{path}: paraphrase {i} lacks {', '.join(missing)}")
    return data


def paraphrase_split(data: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[dict, dict, list[dict[str, str]]]:
    """``(meta_expressions, expression_kinds, pairs)`` for the paraphrase list ``data`` over the split
    whose ``meta_expressions.json`` ``"videos"`` are ``meta``.

    Per video (in the list's order): each paraphrased grammar expression once, under its id in the
    split, then each paraphrase under a new id (after the video's largest id), with the kinds
    labels of the entry. ``pairs``: ``{"video", "grammar", "paraphrase"}`` expression ids, one per
    entry. Raises ``UserError`` when a video or grammar expression of the list is not in ``meta``
    (the split was generated with other settings than the list's ``generator``)."""
    generator = data.get("generator", {})
    hint = (f"; generate the list's split with `referformer synth --out DIR --seed {generator.get('seed')} "
            f"--videos {generator.get('videos')} --split {generator.get('split')}`" if generator else "")
    videos: dict[str, dict] = {}
    kinds: dict[str, dict] = {}
    pairs = []
    next_id: dict[str, int] = {}
    for entry in data["paraphrases"]:
        video = str(entry["video"])
        if video not in meta:
            raise UserError(f"paraphrase list: video {video} is not in the split{hint}")
        expressions = meta[video]["expressions"]
        found = [e for e, x in expressions.items()
                 if x["exp"] == entry["grammar_expression"] and str(x.get("obj_id")) == str(entry["obj_id"])]
        if not found:
            raise UserError(f"paraphrase list: video {video} has no expression {entry['grammar_expression']!r} "
                            f"of object {entry['obj_id']}{hint}")
        out = videos.setdefault(video, {"expressions": {}, "frames": list(meta[video]["frames"])})
        next_id.setdefault(video, max(int(e) for e in expressions) + 1)
        label = {"kinds": list(entry["kinds"]), "trivial": bool(entry["trivial"])}
        grammar_id, paraphrase_id = found[0], str(next_id[video])
        next_id[video] += 1
        out["expressions"][grammar_id] = {"exp": entry["grammar_expression"], "obj_id": str(entry["obj_id"])}
        out["expressions"][paraphrase_id] = {"exp": entry["paraphrase"], "obj_id": str(entry["obj_id"])}
        kinds.setdefault(video, {})[grammar_id] = label
        kinds[video][paraphrase_id] = label
        pairs.append({"video": video, "grammar": grammar_id, "paraphrase": paraphrase_id})
    return {"videos": videos}, kinds, pairs


def write_paraphrase_split(paraphrases: str | Path, root: str | Path, split: str,
                           out_dir: str | Path) -> tuple[Path, Path, list[dict[str, str]]]:
    """Write ``out_dir/meta_expressions.json`` and ``out_dir/expression_kinds.json`` of
    :func:`paraphrase_split` for the split ``root/<split>``; returns their paths and the pairs."""
    root, out_dir = Path(root), Path(out_dir)
    data = read_paraphrases(paraphrases)
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    if not meta_path.is_file():
        raise UserError(f"synthetic split {split!r} not found under {root} ({meta_path} is missing)")
    meta, kinds, pairs = paraphrase_split(data, json.loads(meta_path.read_text(encoding="utf-8"))["videos"])
    out_dir.mkdir(parents=True, exist_ok=True)
    out_meta, out_kinds = out_dir / "meta_expressions.json", out_dir / "expression_kinds.json"
    atomic_write_text(out_meta, json.dumps(meta, indent=1) + "\n")  # every process of a torchrun writes them
    atomic_write_text(out_kinds, json.dumps(kinds, indent=1) + "\n")
    return out_meta, out_kinds, pairs


def _mean(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    j = float(np.mean([r["J"] for r in rows]))
    f = float(np.mean([r["F"] for r in rows]))
    return {"J&F": (j + f) / 2, "J": j, "F": f, "count": len(rows)}


def paraphrase_scores(per_expression: Sequence[Mapping[str, Any]],
                      pairs: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """``{"pairs", "grammar": {J&F, J, F, count}, "paraphrase": {...}}`` from an evaluation report's
    ``per_expression`` rows (``video``, ``expression``, ``J``, ``F``): the means over the paraphrased
    grammar expressions (each once) and over the paraphrases."""
    rows = {(r["video"], r["expression"]): r for r in per_expression}
    grammar = {(p["video"], p["grammar"]) for p in pairs}
    paraphrase = {(p["video"], p["paraphrase"]) for p in pairs}
    missing = sorted((grammar | paraphrase) - set(rows))
    if missing:
        raise ValueError(f"the report has no score for {len(missing)} expressions, e.g. video {missing[0][0]} "
                         f"expression {missing[0][1]}")
    return {"pairs": len(pairs), "grammar": _mean([rows[k] for k in sorted(grammar)]),
            "paraphrase": _mean([rows[k] for k in sorted(paraphrase)])}
