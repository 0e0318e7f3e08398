"""``referformer convert OFFICIAL.pth --preset NAME --out DIR``: official checkpoint -> our format.

Loads the official state dict with every check of ``referformer.checkpoint`` and writes
``DIR/config.json`` + ``DIR/model.safetensors`` (load with ``referformer.load_model(DIR)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from referformer.commands import help_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert an official ReferFormer .pth into our format",
                              description=help_text(__doc__.split("\n\n")[0]))
    p.add_argument("checkpoint", type=Path, help="official checkpoint (.pth, a dict with a 'model' state dict)")
    p.add_argument("--preset", default=None,
                   help="preset name (see `referformer presets`); default: guessed from the file name or keys")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--unsafe-load", action="store_true",
                   help="allow arbitrary pickled objects in the checkpoint (only for files you trust)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from referformer.checkpoint import load_official_state_dict, read_official_checkpoint, save_pretrained
    from referformer.checkpoint.official import guess_preset
    from referformer.models import build_model
    from referformer.presets import get_preset, preset_for_file

    sd = read_official_checkpoint(args.checkpoint, unsafe_load=args.unsafe_load)
    name = args.preset
    if name is None:
        by_file = preset_for_file(args.checkpoint.name)
        name = by_file.name if by_file is not None else guess_preset(sd, args.checkpoint)
        print(f"using preset {name}")
    preset = get_preset(name)
    model = build_model(preset.config, init_weights=False)
    load_official_state_dict(model, sd)
    # config.json also records the original's inference settings (short side 360, query per video)
    out = save_pretrained(model, args.out, metadata={"preset": preset.name, "source": args.checkpoint.name,
                                                      "dataset": preset.dataset})
    print(f"wrote {out} (preset {preset.name})")
    return 0
