"""``referformer synth``: write a synthetic referring-video dataset (Ref-YouTube-VOS layout).

    referformer synth --out data/synthetic --seed 0 --videos 400            # train, valid, test
    referformer synth --out data/synthetic --seed 0 --videos 100 --split test
"""

from __future__ import annotations

import argparse
import json

from referformer.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic referring-video dataset",
        description="Write synthetic videos of moving shapes with unique referring expressions, in the "
        "Ref-YouTube-VOS layout, plus expression_kinds.json (see docs/synthetic.md). The same seed "
        "gives byte-identical files.",
    )
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--videos", type=int, required=True, help="number of videos per split")
    p.add_argument("--split", action="append", default=None,
                   help="split to write (repeat or comma-separate; default: train, valid and test)")
    p.add_argument("--frames", type=int, default=10, help="frames per video (default 10)")
    p.add_argument("--height", type=int, default=96, help="frame height in pixels (default 96)")
    p.add_argument("--width", type=int, default=128, help="frame width in pixels (default 128)")
    p.add_argument("--min-objects", type=int, default=2, help="fewest objects per video (default 2)")
    p.add_argument("--max-objects", type=int, default=5, help="most objects per video (default 5)")
    p.add_argument("--expressions-per-object", type=int, default=3,
                   help="expressions per object, at most (default 3)")
    p.add_argument("--tokenizer", metavar="DIR", default=None,
                   help="also write the synthetic tokenizer (Hugging Face format) to DIR")
    p.add_argument("--overwrite", action="store_true", help="replace splits that already exist in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from referformer.synthetic.scenes import SceneConfig
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer
    from referformer.synthetic.writer import SPLITS, generate_dataset

    splits = [s.strip() for item in (args.split or list(SPLITS)) for s in item.split(",") if s.strip()]
    if len(set(splits)) != len(splits):
        raise UserError(f"--split lists a split twice: {splits}")
    if args.expressions_per_object < 1:
        raise UserError(f"--expressions-per-object must be at least 1, got {args.expressions_per_object}")
    try:
        config = SceneConfig(height=args.height, width=args.width, num_frames=args.frames,
                             min_objects=args.min_objects, max_objects=args.max_objects)
    except ValueError as err:
        raise UserError(str(err)) from err
    summaries = generate_dataset(args.out, args.seed, args.videos, splits, config,
                                 args.expressions_per_object, args.overwrite, progress=not args.quiet)
    for split, summary in summaries.items():
        print(f"{split}: {json.dumps(summary)}")
    if args.tokenizer:
        print(f"tokenizer: {build_synthetic_tokenizer(args.tokenizer)}")
    return 0
