"""``referformer train``: train or fine-tune with a named recipe.

Single process: ``referformer train --recipe ytvos-finetune --root data/ref-youtube-vos --out runs/r50
--init r50_refcoco.pth``. Several GPUs / nodes: ``torchrun --nproc_per_node 8 -m referformer train ...``
(same arguments). ``--resume`` continues the run in ``--out`` exactly where its last checkpoint was.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from referformer.errors import UserError

# CLI option -> TrainConfig field (None values are left to the recipe)
_OVERRIDES = {
    "epochs": "epochs",
    "lr_drop": "optimizer.lr_drop",
    "lr": "optimizer.lr",
    "lr_backbone": "optimizer.lr_backbone",
    "lr_text_encoder": "optimizer.lr_text_encoder",
    "weight_decay": "optimizer.weight_decay",
    "batch_size": "batch_size",
    "sentences_per_clip": "sentences_per_clip",
    "grad_accum": "grad_accum",
    "num_frames": "num_frames",
    "max_size": "max_size",
    "clip_max_norm": "clip_max_norm",
    "num_workers": "num_workers",
    "precision": "precision",
    "device": "device",
    "seed": "seed",
    "checkpoint_every": "checkpoint_every",
    "max_steps": "max_steps",
    "log_every": "log_every",
    "preset": "model_preset",
    "init": "init_from",
    "text_encoder_init": "text_encoder_init",
    "class_weights": "class_weights",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from referformer.engine.recipes import RECIPES

    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model with a named recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values())
    parser.add_argument("--recipe", help=f"training recipe ({recipes})")
    parser.add_argument("--list-recipes", action="store_true", help="print the recipes and their settings, then exit")
    parser.add_argument("--root", type=Path, help="dataset folder (see docs/datasets.md)")
    parser.add_argument("--out", type=Path, help="run folder: log.csv, config.json, last.pth, epoch_XXXX.pth")
    parser.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                        help="continue from CKPT (default: the --out folder's last.pth)")
    parser.add_argument("--init", metavar="CKPT", help="initialise the weights from an official or our checkpoint")
    parser.add_argument("--text-encoder-init", metavar="BERT",
                        help="RefVOS: start BERT from these weights (a `python -m referformer.text_mlm` output, "
                        "or a local Hugging Face BERT such as bert-base-uncased)")
    parser.add_argument("--class-weights", type=float, nargs=2, metavar=("BG", "FG"),
                        help="RefVOS: background / foreground weights of the cross-entropy (default: the recipe's)")
    parser.add_argument("--preset", help="model preset (see `referformer presets`); default: the recipe's model "
                        "(release resnet50; refvos-r101 for the refvos-* recipes)")
    parser.add_argument("--tokenizer", metavar="DIR", help="local RoBERTa tokenizer folder (Hugging Face format)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr-drop", type=int, nargs="+", metavar="EPOCH", help="epochs after which lr *= 0.1")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--lr-backbone", type=float)
    parser.add_argument("--lr-text-encoder", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--batch-size", type=int, help="clips per process and micro-batch")
    parser.add_argument("--sentences-per-clip", type=int, metavar="S",
                        help="train up to S expressions of a clip's video on the same frames (our option; 1 = original)")
    parser.add_argument("--loss-align", type=float, metavar="W",
                        help="weight of the sentence-object alignment term (our option, needs --sentences-per-clip "
                        ">= 2; 0 = off, the original; see docs/training.md)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    parser.add_argument("--num-frames", type=int, help="clip length T")
    parser.add_argument("--max-size", type=int)
    parser.add_argument("--clip-max-norm", type=float)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS steps")
    parser.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after this many optimizer steps")
    parser.add_argument("--log-every", type=int, metavar="STEPS")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--train-text-encoder", action="store_true", help="do not freeze the text encoder")
    text.add_argument("--freeze-text-encoder", action="store_true", help="freeze the text encoder")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--box-loss-visible-only", action="store_true",
                        help="box losses on visible frames only (the original also uses invisible frames)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace):
    """The recipe with the command-line overrides applied."""
    from referformer.engine.recipes import get_recipe

    if not args.recipe:
        raise UserError("give --recipe NAME (see --list-recipes)")
    config = get_recipe(args.recipe)
    changes = {}
    for option, field_name in _OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            changes[field_name] = tuple(value) if option in ("lr_drop", "class_weights") else value
    if args.train_text_encoder:
        changes["freeze_text_encoder"] = False
    if args.freeze_text_encoder:
        changes["freeze_text_encoder"] = True
    if args.activation_checkpointing:
        changes["activation_checkpointing"] = True
    if args.box_loss_visible_only:
        changes["box_loss_visible_only"] = True
    if args.loss_align is not None:
        changes["loss_weights"] = dataclasses.replace(config.loss_weights, loss_align=args.loss_align)
    return config.replace(**changes)


def run(args: argparse.Namespace) -> int:
    from referformer.engine.recipes import RECIPES

    if args.list_recipes:
        for recipe in RECIPES.values():
            o = recipe.optimizer
            print(f"{recipe.name:18s} {recipe.description}")
            print(f"{'':18s} model={recipe.model} dataset={recipe.dataset} epochs={recipe.epochs} lr_drop={list(o.lr_drop)} "
                  f"T={recipe.num_frames} batch={recipe.batch_size} lr={o.lr} lr_backbone={o.lr_backbone}")
        return 0
    if args.out is None:
        raise UserError("give --out RUN_DIR (the run folder)")
    config = config_from_args(args)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else args.out
        if resume.is_dir() and not (resume / "last.pth").is_file():
            raise UserError(f"nothing to resume in {resume}: no last.pth")

    from referformer.engine.trainer import Trainer
    from referformer.engine.wiring import build_components

    components = build_components(config, args.root, tokenizer=args.tokenizer)
    trainer = Trainer(
        config,
        components.model_factory,
        components.dataset,
        args.out,
        components.collate_fn,
        forward=components.forward,
        resume=resume,
        init_convert=components.init_convert,
        show_progress=not args.no_progress,
        criterion_factory=components.criterion_factory,
    )
    last = trainer.fit()
    if trainer.context.is_main and last is not None:
        print(f"checkpoint: {last}")
    return 0
