"""Train the small mask propagator ``propagator-tiny``: data, training, export, evaluation.

A script beside the package (not part of the installed library), run from the repository root::

    python recipes/propagator_tiny.py --work /tmp/ptiny                    # everything
    python recipes/propagator_tiny.py --work /tmp/ptiny --steps evaluate   # one step
    python recipes/propagator_tiny.py --work /tmp/ptiny --steps train -- --max-steps 200   # extra train options

Steps: ``data`` (``referformer synth`` with synthetic-tiny's seed and sizes, 500 / 100 / 100 videos,
``WORK/data``), ``train`` (``referformer train --recipe propagator-tiny --root WORK/data --out
WORK/run``, one CPU process, at the native 96x128), ``finetune`` (the second stage: ``referformer train
--recipe propagator-tiny-192 --init WORK/run --out WORK/run-192``, the same data upsampled to 192x256, the
size the bundled propagator runs at; ``--init`` picks another start, e.g. the bundled ``propagator-tiny``),
``export`` (``WORK/run-192/last.pth`` -> a half-precision model folder ``WORK/model``), ``evaluate``
(``referformer evaluate --task vos --dataset synthetic`` on the test split: first-appearance masks given,
DAVIS J&F; ``WORK/scores_<split>.json``).

To ship the result: copy ``WORK/model`` to ``referformer/assets/propagator-tiny`` and register the name
in ``referformer.checkpoint.registry.BUNDLED_MODELS`` (``"propagator-tiny": "assets/propagator-tiny"``);
``--propagator propagator-tiny`` (the default of ``referformer propagate``) then works everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python recipes/...`: the recipes package

from recipes import steps  # noqa: E402
from referformer.engine.synthetic_tiny import DATA_SEED  # noqa: E402

STEPS = ("data", "train", "finetune", "export", "evaluate")
RECIPE = "propagator-tiny"
FINETUNE_RECIPE = "propagator-tiny-192"


def export(checkpoint: Path, out: Path) -> Path:
    from referformer.engine.propagation_training import export_propagator
    from referformer.engine.recipes import get_recipe

    folder = export_propagator(checkpoint, out, get_recipe(RECIPE), half=True,
                               metadata={"name": RECIPE, "recipe": [RECIPE, FINETUNE_RECIPE], "data_seed": DATA_SEED})
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # safetensors writes 0600; package data must be readable by everyone
    return Path(folder)


def evaluate(model: Path | str, data: Path, split: str, out: Path) -> dict:
    return steps.evaluate(["--task", "vos", "--dataset", "synthetic", "--root", str(data), "--split", split,
                           "--propagator", str(model), "--out", str(out)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work folder (data/, run/, model/, scores)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--model", default=None, help="evaluate this propagator (default: WORK/model)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--init", default=None,
                        help="start of the finetune step (default: WORK/run, the train step's last checkpoint)")
    parser.add_argument("train_args", nargs="*", help="extra `referformer train` options (after --)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    def run(step: str) -> None:
        if step == "data":
            steps.make_data(args.work)
        elif step == "train":
            steps.train(args.work, RECIPE, "run", args.train_args)
        elif step == "finetune":
            steps.train(args.work, FINETUNE_RECIPE, "run-192", args.train_args, args.init or str(args.work / "run"))
        elif step == "export":
            export(args.work / "run-192" / "last.pth", args.work / "model")
        else:
            report = evaluate(args.model or args.work / "model", args.work / "data", args.split,
                              args.work / f"eval_{args.split}")
            (args.work / f"scores_{args.split}.json").write_text(json.dumps(report, indent=2))
            print(f"{args.split}: J&F {report['J&F-Mean']:.3f}, J {report['J-Mean']:.3f}, F {report['F-Mean']:.3f} "
                  f"({report['num_objects']} objects in {report['num_videos']} videos)")

    return steps.run_steps(args.steps, run)


if __name__ == "__main__":
    raise SystemExit(main())
