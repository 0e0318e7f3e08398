"""``referformer train``: train or fine-tune with a named recipe, or run one of its preparatory stages.

Single process: ``referformer train --recipe ytvos-finetune --root data/ref-youtube-vos --out runs/r50
--init r50_refcoco.pth``. Several GPUs / nodes: ``torchrun --nproc_per_node 8 -m referformer train ...``
(same arguments). ``--resume`` continues the run in ``--out`` exactly where its last checkpoint was.

``--stage`` picks what runs (one process each for align and mlm):

  train  (default) the recipe's training into the run folder --out.
  align  our sentence-object alignment stage before training (referformer.engine.align_pretrain):
         --max-steps steps of the recipe's model on the alignment term alone; --out a .pth for --init.
         referformer train --stage align --recipe synthetic-tiny --root DATA --tokenizer DIR
             --out align.pth --max-steps 1000
  mlm    RefVOS's masked-language-model step (referformer.engine.text_mlm): the BERT of --preset (or of
         the --recipe's preset; default refvos-r101) from --init, fine-tuned on the expressions of --root
         (or --sentences FILE); --out a .safetensors for --text-encoder-init.
         referformer train --stage mlm --root data/ref-youtube-vos --preset refvos-r101
             --tokenizer bert-base-uncased --init bert-base-uncased --out bert_mlm.safetensors --max-steps 1000
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from referformer.commands import help_text
from referformer.errors import UserError

STAGES = ("train", "align", "mlm")

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
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values())
    parser.add_argument("--recipe", help=f"training recipe ({recipes})")
    parser.add_argument("--stage", choices=STAGES, default="train",
                        help="train (default): the recipe's training; align: the alignment stage before it "
                        "(--out a .pth for --init); mlm: RefVOS's BERT MLM step (--out a .safetensors for "
                        "--text-encoder-init); see above")
    parser.add_argument("--list-recipes", action="store_true", help="print the recipes and their settings, then exit")
    parser.add_argument("--root", type=Path, help="dataset folder (see docs/datasets.md)")
    parser.add_argument("--out", type=Path, help="run folder: log.csv, config.json, last.pth, epoch_XXXX.pth "
                        "(--stage align: the .pth file; --stage mlm: the .safetensors file)")
    parser.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                        help="continue from CKPT (default: the --out folder's last.pth)")
    parser.add_argument("--init", metavar="CKPT", help="initialise the weights from an official or our checkpoint "
                        "(--stage mlm: the BERT weights to start from, a Hugging Face BERT or .safetensors)")
    parser.add_argument("--text-encoder-init", metavar="BERT",
                        help="RefVOS: start BERT from these weights (a `referformer train --stage mlm` output, "
                        "or a local Hugging Face BERT such as bert-base-uncased)")
    parser.add_argument("--class-weights", type=float, nargs=2, metavar=("BG", "FG"),
                        help="RefVOS: background / foreground weights of the cross-entropy (default: the recipe's)")
    parser.add_argument("--preset", help="model preset (see `referformer presets`); default: the recipe's model "
                        "(release resnet50; refvos-r101 for the refvos-* recipes)")
    parser.add_argument("--tokenizer", metavar="DIR", help="local tokenizer folder (Hugging Face format): RoBERTa "
                        "for ReferFormer, BERT for RefVOS and --stage mlm")
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
    parser.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after this many optimizer steps "
                        "(--stage align: the steps to run, required; --stage mlm: default 1000)")
    parser.add_argument("--log-every", type=int, metavar="STEPS")
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--train-text-encoder", action="store_true", help="do not freeze the text encoder")
    text.add_argument("--freeze-text-encoder", action="store_true", help="freeze the text encoder")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--box-loss-visible-only", action="store_true",
                        help="box losses on visible frames only (the original also uses invisible frames)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    mlm = parser.add_argument_group("--stage mlm")
    mlm.add_argument("--sentences", type=Path, metavar="FILE",
                     help="train on these sentences (one per line) instead of the expressions of --root")
    mlm.add_argument("--split", default="train", help="the split of --root whose expressions are read (default train)")
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
        raise UserError("give --out RUN_DIR (the run folder)" if args.stage == "train" else
                        f"give --out FILE (where the {args.stage} stage writes its weights)")
    if args.stage != "train" and args.resume is not None:
        raise UserError(f"--resume continues a training run; the {args.stage} stage always starts afresh")
    if args.stage == "align":
        return run_align(args)
    if args.stage == "mlm":
        return run_mlm(args)
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


def run_align(args: argparse.Namespace) -> int:
    """``--stage align``: :func:`referformer.engine.align_pretrain.pretrain_alignment` on the recipe
    (with the command-line overrides) for ``--max-steps`` steps, written to ``--out``."""
    from referformer.engine.align_pretrain import pretrain_alignment

    if args.max_steps is None:
        raise UserError("give the number of alignment steps with --max-steps N (synthetic-tiny uses 1000)")
    config = config_from_args(args)
    path = pretrain_alignment(config, args.root, args.out, args.max_steps, args.tokenizer,
                              show_progress=not args.no_progress)
    print(f"alignment weights: {path}")
    return 0


def run_mlm(args: argparse.Namespace) -> int:
    """``--stage mlm``: :func:`referformer.engine.text_mlm.run_mlm_stage` on the expressions of ``--root``
    (or ``--sentences``), ``--max-steps`` / ``--batch-size`` / ``--lr`` / ``--seed`` over ``MLMConfig``'s
    defaults, written to ``--out``."""
    from referformer.engine.recipes import get_recipe
    from referformer.engine.text_mlm import MLMConfig, run_mlm_stage, training_sentences

    if (args.root is None) == (args.sentences is None):
        raise UserError("the mlm stage trains on the expressions of --root DATA or on --sentences FILE: give one")
    if args.tokenizer is None:
        raise UserError("the mlm stage needs the BERT tokenizer: give --tokenizer DIR (or a cached name)")
    preset = args.preset
    if preset is None and args.recipe:
        recipe = get_recipe(args.recipe)
        if recipe.model != "refvos" or not recipe.model_preset:
            raise UserError(f"recipe {args.recipe!r} names no RefVOS preset for the mlm stage; give --preset "
                            "(see `referformer presets`)")
        preset = recipe.model_preset
    if args.sentences is not None:
        if not args.sentences.is_file():
            raise UserError(f"--sentences {args.sentences} not found (a text file, one sentence per line)")
        sentences = args.sentences.read_text(encoding="utf-8").splitlines()
    else:
        sentences = training_sentences(args.root, args.split)
    overrides = {"steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    config = MLMConfig(**{name: value for name, value in overrides.items() if value is not None})
    losses = run_mlm_stage(sentences, preset or "refvos-r101", args.tokenizer, args.out, config, init=args.init,
                           progress=not args.no_progress)
    print(f"{len(sentences)} sentences, {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"wrote {args.out}")
    return 0
