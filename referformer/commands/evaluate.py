"""``referformer evaluate``: score existing results with the original benchmarks' protocols.

Two modes (mutually exclusive):

* ``--protocol {davis,a2d,jhmdb,mevis}`` scores result files already on disk, in the original
  toolkits' input formats, without a model (see ``docs/evaluation.md``);
* ``--dataset ...`` (model-driven evaluation: run a checkpoint on a dataset, then score it) is not
  available yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from referformer.errors import UserError

PROTOCOLS = ("davis", "a2d", "jhmdb", "mevis", "refcoco")

_EPILOG = """\
inputs per protocol:
  davis   --gt GT_DIR --pred PRED_DIR   <sequence>/<frame>.png index PNGs (GT: 0 background,
                                        k object k, 255 void); unsupervised DAVIS task
  a2d     --gt GT.json --pred RES.json  COCO ground truth (one RLE annotation per image) and
  jhmdb                                 COCO results [{"image_id", "segmentation", "score"}]
  mevis   --gt VALID_U_DIR --pred DIR   VALID_U_DIR holds meta_expressions.json and
                                        mask_dict.json; DIR/<video>/<exp_id>/<frame>.png
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` and its arguments."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score results with the DAVIS / A2D / JHMDB / MeViS protocols",
        description="Score existing results with an original benchmark protocol.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--protocol", choices=PROTOCOLS, help="score result files on disk")
    mode.add_argument(
        "--dataset", help="run a checkpoint on a dataset and score it (not available yet)"
    )
    parser.add_argument("--gt", type=Path, help="ground truth (folder or file, per protocol)")
    parser.add_argument("--pred", type=Path, help="predictions (folder or file, per protocol)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of tables"
    )
    parser.add_argument(
        "--missing-video-zero",
        action="store_true",
        help="mevis: score a missing video folder 0 like the official script (default: error)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def evaluate_protocol(
    protocol: str, gt: Path, pred: Path, *, progress: bool = True, missing_video_zero: bool = False
) -> dict:
    """Score ``pred`` against ``gt`` with ``protocol``; returns the result's ``to_dict()``."""
    if protocol == "davis":
        from referformer.evaluation.davis import evaluate_folders

        return evaluate_folders(gt, pred, progress=progress).to_dict()
    if protocol in ("a2d", "jhmdb"):
        from referformer.evaluation.a2d import evaluate_a2d

        return evaluate_a2d(gt, pred, progress=progress).to_dict()
    if protocol == "mevis":
        from referformer.evaluation.mevis import evaluate_mevis

        missing = "zero" if missing_video_zero else "error"
        return evaluate_mevis(gt, pred, missing=missing, progress=progress).to_dict()
    raise UserError(
        f"--protocol {protocol} is not available yet: its result-file format is not fixed; "
        "the metrics are in referformer.evaluation.refcoco"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; prints JSON or tables on stdout and returns 0."""
    from referformer.evaluation.report import format_report, to_json

    if args.dataset is not None:
        raise UserError(
            "--dataset (model-driven evaluation) is not available yet; score existing results "
            "with --protocol {davis,a2d,jhmdb,mevis} --gt ... --pred ..."
        )
    for flag in ("gt", "pred"):
        if getattr(args, flag) is None:
            raise UserError(f"--protocol {args.protocol} needs --{flag}")
    result = evaluate_protocol(
        args.protocol,
        args.gt,
        args.pred,
        progress=not args.no_progress,
        missing_video_zero=args.missing_video_zero,
    )
    name = "a2d" if args.protocol == "jhmdb" else args.protocol
    print(to_json(result) if args.json else format_report(name, result))
    return 0
