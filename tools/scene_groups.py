"""J&F of ``referformer evaluate --dataset synthetic`` reports grouped by what happens to the referred
object in its video (the scene facts ``referformer synth`` writes in ``<split>/scenes.json``).

    python tools/scene_groups.py ROOT SPLIT RESULT [RESULT ...]

A RESULT is an evaluation's report (``--json`` output or ``report.json``) or its ``--out`` folder, whose
``records/`` hold the videos finished so far (a run still going, or stopped); only the videos present in
every RESULT are counted, so the columns compare the same expressions.

A developer utility beside the package (not installed with it). Groups of an expression, by its
referred object:

* ``occluded``: in some frame another object drawn in front of it (higher ``depth``) is closer to it
  than 0.9 x the sum of their radii (centre distance), so part of it is hidden;
* ``enters_or_leaves``: its motion is ``enter`` or ``leave`` (absent in the first or last frames);
* ``plain``: neither;
* ``kind: K`` / ``kind: only K``: the expression kinds of ``meta_expressions/<split>/expression_kinds.json``.

Prints one markdown table: a row per group, a column per report (J&F, with the count of expressions).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

OCCLUSION_OVERLAP = 0.9  # centre distance below this fraction of the radii's sum: partly hidden


def object_groups(scene: dict) -> dict[str, set[str]]:
    """Object id -> the groups of the module docstring that it belongs to."""
    objects = scene["objects"]
    groups: dict[str, set[str]] = {}
    for oid, obj in objects.items():
        tags: set[str] = set()
        if obj["motion"] in ("enter", "leave"):
            tags.add("enters_or_leaves")
        for other_id, other in objects.items():
            if other_id == oid or other["depth"] <= obj["depth"]:
                continue
            limit = OCCLUSION_OVERLAP * (obj["radius"] + other["radius"])
            if any(math.dist(a, b) < limit for a, b in zip(obj["centres_xy"], other["centres_xy"])):
                tags.add("occluded")
        groups[oid] = tags or {"plain"}
    return groups


def expression_groups(root: Path, split: str) -> dict[tuple[str, str], set[str]]:
    """(video, expression id) -> groups, for every expression of the split."""
    scenes = json.loads((root / split / "scenes.json").read_text())["videos"]
    out: dict[tuple[str, str], set[str]] = {}
    for video, scene in scenes.items():
        by_object = object_groups(scene)
        for exp_id, exp in scene["expressions"].items():
            out[(video, exp_id)] = by_object[exp["obj_id"]] | {"all"}
    kinds_file = root / "meta_expressions" / split / "expression_kinds.json"
    if kinds_file.is_file():  # the expression kinds of the benchmark (docs/synthetic.md), one row each
        for video, expressions in json.loads(kinds_file.read_text()).items():
            for exp_id, entry in expressions.items():
                kinds = entry["kinds"]
                out[(video, exp_id)] |= {f"kind: {k}" for k in kinds}
                if len(kinds) == 1:
                    out[(video, exp_id)].add(f"kind: only {kinds[0]}")
    return out


def expression_rows(path: Path) -> list[dict]:
    """Per-expression rows (``video``, ``expression``, ``J``, ``F``) of a report or an ``--out`` folder."""
    if path.is_dir():
        return [row for record in sorted((path / "records").glob("*.json"))
                for row in json.loads(record.read_text())["expressions"]]
    return json.loads(path.read_text())["per_expression"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("split")
    parser.add_argument("reports", type=Path, nargs="+")
    args = parser.parse_args(argv)
    groups = expression_groups(args.root, args.split)
    names = ["all", "occluded", "enters_or_leaves", "plain"]
    names += sorted({g for tags in groups.values() for g in tags if g.startswith("kind: ")})
    results = [expression_rows(path) for path in args.reports]
    common = set.intersection(*({row["video"] for row in rows} for rows in results))
    print(f"{len(common)} videos in every result")
    columns = []
    for rows in results:
        rows = [row for row in rows if row["video"] in common]
        scores: dict[str, list[float]] = {name: [] for name in names}
        for row in rows:
            for name in groups[(row["video"], str(row["expression"]))]:
                scores[name].append((row["J"] + row["F"]) / 2)
        columns.append(scores)
    print("| group | n | " + " | ".join(p.name for p in args.reports) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in args.reports) + " |")
    for name in names:
        count = len(columns[0][name])
        cells = [f"{sum(c[name]) / len(c[name]):.3f}" if c[name] else "-" for c in columns]
        print(f"| {name} | {count} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
