"""Evaluation drivers: run a model over a whole split and write what each benchmark needs.

    from referformer.evaluation.drivers import load_segmenter, run_evaluation
    segmenter = load_segmenter("converted/ytvos-r50")
    report = run_evaluation("davis", "data/ref-davis", "valid", segmenter, "out/davis")

Any callable can stand in for the model (see :mod:`.segmenters`): ``segmenter(VideoRequest)``
yields per-sentence mask probabilities for the video benchmarks, ``segmenter.queries(ClipRequest)``
every query of one frame for A2D / JHMDB / RefCOCO. Runs shard videos over the processes of a
``torchrun`` launch and resume where they stopped (:mod:`.runner`). ``docs/evaluation.md`` lists
the outputs and numbers of every dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from referformer.errors import UserError
from referformer.evaluation.drivers.runner import RunContext, atomic_write_text
from referformer.evaluation.drivers.segmenters import (
    ClipRequest,
    ModelSegmenter,
    QueryPrediction,
    VideoRequest,
    load_segmenter,
    resolve_checkpoint,
)

__all__ = [
    "DEFAULT_SPLITS",
    "EVAL_DATASETS",
    "ClipRequest",
    "ModelSegmenter",
    "QueryPrediction",
    "RunContext",
    "VideoRequest",
    "build_eval_dataset",
    "load_segmenter",
    "resolve_checkpoint",
    "run_evaluation",
]

EVAL_DATASETS = ("ytvos", "davis", "a2d", "jhmdb", "mevis", "refcoco", "refcoco+", "refcocog", "synthetic")
DEFAULT_SPLITS = {"ytvos": "valid", "davis": "valid", "a2d": "test", "jhmdb": "test", "mevis": "valid_u",
                  "refcoco": "val", "refcoco+": "val", "refcocog": "val", "synthetic": "valid"}
REPORT_FILENAME = "report.json"


def build_eval_dataset(name: str, root: str | Path, split: str, num_frames: int = 5, *,
                       expressions: str | Path | None = None, **options: Any) -> Any:
    """The evaluation view of a split (``ExpressionVideoDataset`` for video benchmarks, the sample
    datasets for A2D / JHMDB / RefCOCO). Synthetic splits (Ref-YouTube-VOS layout, masks in
    ``<split>/Annotations``) get ground truth from their palette PNGs; ``expressions``: a
    ``meta_expressions.json`` to use instead of the split's (e.g. the paraphrases of
    :mod:`referformer.evaluation.paraphrases`). ``options`` go to
    :func:`referformer.data.build_dataset` for A2D / JHMDB / RefCOCO (e.g. ``max_size``)."""
    from referformer.data import build_dataset

    root = Path(root)
    if expressions is not None and name != "synthetic":
        raise UserError(f"a replacement expressions file applies to the synthetic benchmark only, not {name}")
    if name == "synthetic":
        from referformer.data.base import ExpressionVideoDataset
        from referformer.data.io import require_dir
        from referformer.data.ytvos import PaletteMaskReader, read_expressions

        meta = root / "meta_expressions" / split / "meta_expressions.json"
        if not meta.is_file():
            found = sorted(p.parent.name for p in (root / "meta_expressions").glob("*/meta_expressions.json"))
            raise UserError(f"synthetic split {split!r} not found under {root} ({meta} is missing); "
                            f"splits present: {', '.join(found) or 'none'}")
        annotations = require_dir(root / split / "Annotations", "the split's palette masks")
        records = read_expressions(Path(expressions) if expressions is not None else meta, root / split / "JPEGImages")
        return ExpressionVideoDataset(records, "synthetic", 360, mask_loader=PaletteMaskReader(annotations).video)
    if name in ("a2d", "jhmdb"):
        return build_dataset(name, root, split, num_frames=num_frames, augment=False, **options)
    if name in ("refcoco", "refcoco+", "refcocog"):
        return build_dataset(name, root, split, num_frames=1, augment=False, **options)
    if name == "davis":
        return build_dataset("davis", root, split, mode="eval")
    return build_dataset(name, root, split)


def run_evaluation(
    name: str,
    root: str | Path,
    split: str | None,
    segmenter: Any,
    out_dir: str | Path,
    *,
    labels: str | Path | None = None,
    num_frames: int = 5,
    context: RunContext | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    dataset: Any = None,
) -> dict[str, Any] | None:
    """Run ``segmenter`` on dataset ``name`` (one of :data:`EVAL_DATASETS`) and write its outputs
    and ``<out_dir>/report.json``; returns the report on rank 0, None on other ranks.

    ``labels``: an ``expression_kinds.json`` for per-kind scores (synthetic: found automatically
    under ``root``). ``num_frames``: A2D / JHMDB clip length (the original default 5). ``dataset``:
    the split already built by :func:`build_eval_dataset` (built here when None).
    """
    if name not in EVAL_DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(EVAL_DATASETS)}")
    root, out_dir = Path(root), Path(out_dir)
    split = split or DEFAULT_SPLITS[name]
    context = context or RunContext()
    if dataset is None:
        dataset = build_eval_dataset(name, root, split, num_frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = Path(labels) if labels is not None else None
    if name == "synthetic" and kinds is None:
        from referformer.evaluation.drivers.kinds import find_kinds_file

        kinds = find_kinds_file(root, split)
    elif kinds is not None and name not in ("synthetic", "ytvos", "mevis"):
        raise UserError(f"--labels applies to video benchmarks with ground truth (synthetic, mevis valid_u), "
                        f"not {name}")
    if kinds is not None and not kinds.is_file():
        raise UserError(f"--labels {kinds}: file not found (format: docs/synthetic.md)")
    if name in ("ytvos", "mevis", "synthetic"):
        from referformer.evaluation.drivers.video import evaluate_videos

        score = name == "synthetic" or (name == "mevis" and split == "valid_u")
        if kinds is not None and not score:
            raise UserError(f"--labels: {name} {split} has no ground truth to score per kind")
        report = evaluate_videos(dataset, segmenter, out_dir, benchmark=name, score=score, labels=kinds,
                                 context=context, progress=progress)
    elif name == "davis":
        from referformer.evaluation.drivers.davis import evaluate_davis

        report = evaluate_davis(dataset, segmenter, out_dir, root, context=context, progress=progress)
    elif name in ("a2d", "jhmdb"):
        from referformer.evaluation.drivers.a2d import GT_FILES, evaluate_a2d_split

        report = evaluate_a2d_split(dataset, segmenter, out_dir, root / GT_FILES[name], context=context,
                                    progress=progress)
    else:
        from referformer.evaluation.drivers.refcoco import evaluate_refcoco_split

        report = evaluate_refcoco_split(dataset, segmenter, out_dir, context=context, progress=progress)
    if report is None:
        return None
    report = {"dataset": name, "split": split, **(metadata or {}), **report}
    from referformer.evaluation.report import to_json

    atomic_write_text(out_dir / REPORT_FILENAME, to_json(report))
    report["outputs"] = {**report.get("outputs", {}), "report": str(out_dir / REPORT_FILENAME)}
    return json.loads(to_json(report))
