"""``referformer evaluate --task vos``: semi-supervised video object segmentation with a propagator.

    referformer evaluate --task vos --dataset davis --root data/DAVIS-2017 --propagator DIR --json
    referformer evaluate --task vos --dataset synthetic --root data/synthetic --split test --propagator DIR

The protocol (which masks are given, which frames are scored) is :mod:`referformer.evaluation.vos`;
the run is :func:`referformer.evaluation.drivers.vos.evaluate_vos` (sharded under ``torchrun``,
resumable); numbers are DAVIS's J and F. Outputs in ``--out`` (default ``eval-vos-<dataset>-<split>``):
``Annotations/<video>/<frame>.png`` palette label maps and ``report.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from referformer.errors import UserError


def run_vos(args: argparse.Namespace) -> int:
    """Check the arguments, load the propagator, run the split, print the report on rank 0."""
    from referformer.evaluation.drivers import RunContext
    from referformer.evaluation.drivers.runner import atomic_write_text
    from referformer.evaluation.drivers.vos import VOS_DATASETS, VOS_DEFAULT_SPLITS, evaluate_vos
    from referformer.evaluation.report import format_metrics, to_json
    from referformer.inference.device import resolve_device
    from referformer.inference.propagators import load_propagator

    if args.dataset not in VOS_DATASETS:
        raise UserError(f"--task vos runs on {', '.join(VOS_DATASETS)}, not {args.dataset}")
    if args.root is None:
        raise UserError(f"--task vos --dataset {args.dataset} needs --root")
    if args.propagator is None:
        raise UserError("--task vos needs --propagator NAME (a propagator folder, a bundled one or sam2:...)")
    if args.checkpoint or args.propagate:
        raise UserError("--task vos evaluates a propagator alone: drop --checkpoint / --propagate")
    if args.window is not None and args.window < 1:
        raise UserError(f"--window must be at least 1, got {args.window}")
    split = args.split or VOS_DEFAULT_SPLITS[args.dataset]
    out = args.out or Path(f"eval-vos-{args.dataset}-{split}")
    context = RunContext.from_environment()
    backend = load_propagator(args.propagator, resolve_device(args.device), short_side=args.short_side)
    report = evaluate_vos(args.dataset, args.root, split, backend, out, window=args.window or 8, context=context,
                          progress=not args.no_progress)
    if report is None:  # not rank 0
        return 0
    atomic_write_text(out / "report.json", to_json(report))
    report["outputs"]["report"] = str(out / "report.json")
    if args.json:
        print(to_json(report))
        return 0
    print(f"vos {args.dataset} {split} ({report['layout']}): {report['propagator']}, "
          f"{report['num_videos']} videos, {report['num_objects']} objects")
    print(format_metrics(report))
    if "note" in report:
        print(f"note: {report['note']}")
    print("\noutputs: " + ", ".join(f"{k} {v}" for k, v in report["outputs"].items()))
    return 0
