"""``referformer evaluate``: score existing results with the original benchmarks' protocols.

Two modes (mutually exclusive):

* ``--protocol {davis,a2d,jhmdb,mevis}`` scores result files already on disk, in the original
  toolkits' input formats, without a model (see ``docs/evaluation.md``);
* ``--dataset NAME --root DIR --checkpoint CKPT --out DIR`` runs a checkpoint over a whole split,
  writes what the benchmark needs (submission zip, DAVIS folders, COCO results) and its numbers
  (``<out>/report.json``); sharded over the processes of a ``torchrun`` launch and resumable
  (:mod:`referformer.evaluation.drivers`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from referformer.errors import UserError

# the names of referformer.checkpoint.settings.QUERY_POLICIES, repeated so that --help does not import torch
QUERY_POLICIES = ("per_video", "per_window")
PROTOCOLS = ("davis", "a2d", "jhmdb", "mevis", "refcoco")
DATASETS = ("ytvos", "davis", "a2d", "jhmdb", "mevis", "refcoco", "refcoco+", "refcocog", "synthetic")

_EPILOG = """\
inputs per protocol:
  davis   --gt GT_DIR --pred PRED_DIR   <sequence>/<frame>.png index PNGs (GT: 0 background,
                                        k object k, 255 void); unsupervised DAVIS task
  a2d     --gt GT.json --pred RES.json  COCO ground truth (one RLE annotation per image) and
  jhmdb                                 COCO results [{"image_id", "segmentation", "score"}]
  mevis   --gt VALID_U_DIR --pred DIR   VALID_U_DIR holds meta_expressions.json and
                                        mask_dict.json; DIR/<video>/<exp_id>/<frame>.png

model-driven evaluation (--dataset):
  referformer evaluate --dataset synthetic --root DIR --checkpoint CKPT [--tokenizer DIR] --json
  referformer evaluate --dataset synthetic --root DIR --checkpoint CKPT --paraphrases LIST.json
  torchrun --nproc_per_node N -m referformer evaluate --dataset davis --root data/ref-davis
      --checkpoint CKPT --out out/davis    (re-run the same command to resume)
  outputs in --out: report.json; ytvos/mevis submission.zip + Annotations/; davis anno_0..3/;
  a2d/jhmdb results.json; --labels KINDS.json adds per-kind scores (docs/synthetic.md)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` and its arguments."""
    parser = subparsers.add_parser(
        "evaluate",
        help="run a checkpoint over a benchmark split, or score existing results",
        description="Run a checkpoint over a dataset split (--dataset) or score existing results "
        "with an original benchmark protocol (--protocol).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--protocol", choices=PROTOCOLS, help="score result files on disk")
    mode.add_argument("--dataset", choices=DATASETS, help="run a checkpoint on a dataset split and score it")
    model = parser.add_argument_group("--dataset mode")
    model.add_argument("--root", type=Path, help="the dataset's root folder")
    model.add_argument("--split", help="split to evaluate (default: the benchmark's evaluation split)")
    model.add_argument("--checkpoint", help="converted model folder, official .pth, or a bundled name")
    model.add_argument("--preset", help="architecture of an official .pth (see `referformer presets`)")
    model.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the model config's)")
    model.add_argument("--out", type=Path, help="output folder (default: eval-<dataset>-<split>)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    model.add_argument("--labels", type=Path, help="expression_kinds.json for per-kind scores")
    model.add_argument("--paraphrases", type=Path, metavar="FILE",
                       help="synthetic: score this paraphrase list (tests/data/synthetic_paraphrases.json) and the "
                       "grammar expressions it paraphrases instead of the split's expressions; the report's "
                       "'paraphrases' gives J&F of each set (docs/synthetic.md, Paraphrases)")
    model.add_argument("--num-frames", type=int, default=5, help="a2d/jhmdb clip length (default 5)")
    model.add_argument("--sentence-batch-size", type=int, default=8, help="sentences decoded at once")
    model.add_argument("--short-side", type=int, default=None,
                       help="frames' shorter side for the model (default: the model's inference settings; "
                       "360 for the official checkpoints; video benchmarks)")
    model.add_argument("--window", type=int, default=None, metavar="N",
                       help="frames per clip (default: the model's settings, else the benchmark's clip: whole "
                       "video for ytvos / mevis / synthetic, 36 frames for davis, as the original)")
    model.add_argument("--query-policy", choices=QUERY_POLICIES, default=None,
                       help="per_video (one query per clip, the original) or per_window (default: the model's)")
    model.add_argument("--task", choices=("rvos", "vos"), default="rvos",
                       help="rvos (default): referring segmentation with --checkpoint; vos: semi-supervised video "
                       "object segmentation with --propagator (first-frame masks given; davis, ytvos, synthetic)")
    model.add_argument("--propagator", metavar="NAME",
                       help="--task vos: the propagator (a propagator folder, a bundled one or sam2:...; "
                       "docs/propagation.md)")
    model.add_argument("--propagate", metavar="NAME",
                       help="ReferFormer + propagation (the paper's post-process): propagate each expression's mask "
                       "from its top-scoring frame with this propagator (video benchmarks)")
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
        return run_dataset(args)
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


def default_split(dataset: str, root: Path | None) -> str:
    """The benchmark's evaluation split; for the synthetic benchmark, the only split a root holds
    when it lacks that one (``referformer synth --split test`` writes one split)."""
    from referformer.evaluation.drivers import DEFAULT_SPLITS

    split = DEFAULT_SPLITS[dataset]
    if dataset == "synthetic" and root is not None:
        present = sorted(p.parent.name for p in (root / "meta_expressions").glob("*/meta_expressions.json"))
        if split not in present and len(present) == 1:
            return present[0]
    return split


def run_dataset(args: argparse.Namespace) -> int:
    """``--dataset`` mode: load the checkpoint, run the split, print the report on rank 0."""
    import os

    import torch

    from referformer.evaluation.drivers import (
        RunContext,
        build_eval_dataset,
        load_segmenter,
        resolve_checkpoint,
        run_evaluation,
    )
    from referformer.evaluation.report import format_metrics, format_table, to_json
    from referformer.inference.device import resolve_device

    if args.paraphrases is not None and (args.task == "vos" or args.dataset != "synthetic"):
        raise UserError("--paraphrases applies to referring segmentation (--task rvos) on --dataset synthetic")
    if args.task == "vos":  # semi-supervised VOS: a propagator, no ReferFormer
        from referformer.commands.evaluate_vos import run_vos

        return run_vos(args)
    if args.propagate and args.dataset not in ("ytvos", "mevis", "davis", "synthetic"):
        raise UserError(f"--propagate applies to the video benchmarks (ytvos, mevis, davis, synthetic), not {args.dataset}")
    for flag in ("root", "checkpoint"):
        if getattr(args, flag) is None:
            raise UserError(f"--dataset {args.dataset} needs --{flag}")
    for flag in ("num_frames", "short_side", "sentence_batch_size", "window"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    split = args.split or default_split(args.dataset, args.root)
    out = args.out or Path(f"eval-{args.dataset}-{split}" + ("-paraphrases" if args.paraphrases else ""))
    expressions, pairs = None, None
    if args.paraphrases is not None:  # a meta_expressions.json of the paraphrases and their grammar expressions
        from referformer.evaluation.paraphrases import write_paraphrase_split

        expressions, kinds, pairs = write_paraphrase_split(args.paraphrases, args.root, split, out / "paraphrases")
        args.labels = args.labels or kinds
    dataset = build_eval_dataset(args.dataset, args.root, split, args.num_frames,
                                 expressions=expressions)  # bad input fails fast
    context = RunContext.from_environment()  # gloo: the processes only need barriers
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None and context.world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    checkpoint = resolve_checkpoint(args.checkpoint)
    segmenter = load_segmenter(checkpoint, preset=args.preset, tokenizer=args.tokenizer, device=device,
                               sentence_batch_size=args.sentence_batch_size, window=args.window,
                               short_side=args.short_side, query_policy=args.query_policy)
    if args.propagate:  # the paper's post-process (referformer.evaluation.drivers.propagating)
        from referformer.evaluation.drivers.propagating import PropagatingSegmenter
        from referformer.inference.propagators import load_propagator

        segmenter = PropagatingSegmenter(segmenter, load_propagator(args.propagate, device))
    settings = segmenter.predictor.settings
    report = run_evaluation(
        args.dataset, args.root, split, segmenter, out, labels=args.labels, num_frames=args.num_frames,
        context=context, progress=not args.no_progress,
        metadata={"checkpoint": str(checkpoint), "preset": args.preset, "inference": settings.to_dict(),
                  **({"propagate": args.propagate} if args.propagate else {})},
        dataset=dataset,
    )
    if report is None:  # not rank 0: rank 0 prints
        return 0
    if pairs is not None:
        from referformer.evaluation.drivers.runner import atomic_write_text
        from referformer.evaluation.paraphrases import paraphrase_scores

        report["paraphrases"] = paraphrase_scores(report["per_expression"], pairs)
        atomic_write_text(Path(report["outputs"]["report"]), to_json(report))
    if args.json:
        print(to_json(report))
        return 0
    print(f"{args.dataset} {split}: {checkpoint} (short side {settings.short_side}, window "
          f"{settings.window or 'per benchmark'}, {settings.query_policy})")
    print(format_metrics(report))
    if "tracklet_recall" in report:  # a tracklets model: referred objects covered by a kept tracklet (IoU >= 0.5)
        print(f"tracklet recall: {report['tracklet_recall']:.3f}")
    for anno in ("anno_0", "anno_1", "anno_2", "anno_3"):
        if anno in report:
            print(f"\n{anno}:\n" + format_metrics(report[anno]))
    if report.get("groups"):
        rows = [{"group": g, **v} for g, v in report["groups"].items()]
        print("\nby expression kind:\n" + format_table(rows, ["group", "count", "J&F", "J", "F"]))
    for row in report.get("refused_expressions", []):
        print(f"refused (scored as an empty mask): video {row['video']} expression {row['expression']}: {row['reason']}")
    if pairs is not None:
        para = report["paraphrases"]
        print(f"\nparaphrases ({para['pairs']}): J&F {para['paraphrase']['J&F']:.3f} against "
              f"{para['grammar']['J&F']:.3f} on the {para['grammar']['count']} grammar expressions they paraphrase")
    print("\noutputs: " + ", ".join(f"{k} {v}" for k, v in report.get("outputs", {}).items()))
    return 0
