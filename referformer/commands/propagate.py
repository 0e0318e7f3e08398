"""``referformer propagate``: semi-supervised video object segmentation (masks given, propagated).

    referformer propagate INPUT --mask 00000.png [--mask 00040.png ...] --out DIR [--propagator NAME]

Each ``--mask`` is a palette PNG named after its frame whose pixel values are object ids; every
object is propagated forward and backward from each frame where it is given
(:mod:`referformer.inference.propagation`). Writes palette label maps ``DIR/masks/<frame>.png``,
``DIR/results.json`` and ``DIR/overlay.mp4`` (:mod:`referformer.inference.propagation_output`).
Everything a user can get wrong is checked before the output folder is created, each with one line.
See docs/propagation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from referformer.errors import UserError
from referformer.inference.video_io import open_source
from referformer.inference.writers import check_output_dir

DEFAULT_PROPAGATOR = "propagator-tiny"  # = referformer.inference.propagators.DEFAULT_PROPAGATOR (no torch at --help)
DEFAULT_WINDOW = 8


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``referformer propagate`` and its options."""
    parser = subparsers.add_parser(
        "propagate",
        help="propagate object masks given at some frames through a video (semi-supervised VOS)",
        description="Propagate the objects of palette-PNG masks (named after their frames) forward and "
        "backward through every frame of INPUT. Writes masks/<frame>.png label maps, results.json and "
        "overlay.mp4 under --out.",
    )
    parser.add_argument("input", metavar="INPUT", help="a video, a folder of frames, an image or a GIF")
    parser.add_argument("--mask", action="append", required=True, metavar="FRAME_PNG",
                        help="palette PNG of a frame (pixel = object id, 0 background), named after the frame "
                        "(00010.png for frame 00010); repeat for several frames")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    parser.add_argument("--propagator", default=DEFAULT_PROPAGATOR, metavar="NAME",
                        help="a propagator folder, a bundled propagator, or sam2:CONFIG.yaml:CHECKPOINT.pt "
                        f"(default {DEFAULT_PROPAGATOR})")
    parser.add_argument("--objects", type=int, nargs="+", metavar="ID", help="track only these object ids")
    parser.add_argument("--overwrite", action="store_true", help="reuse an existing output folder")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                        help=f"frames decoded, spilled and written at a time (default {DEFAULT_WINDOW})")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--stride", type=int, default=1, metavar="K", help="keep every K-th frame")
    sampling.add_argument("--fps", type=float, default=None, help="keep at most FPS frames per second")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--short-side", type=int, default=None, metavar="PX",
                        help="processing size of a learned propagator (default: its own; masks are always "
                        "written at the original size)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--no-overlay", dest="save_overlay", action="store_false", help="do not write overlay.mp4")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check every input, load the propagator, propagate, write the outputs, report."""
    for value, option in ((args.window, "--window"), (args.short_side, "--short-side")):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    source = open_source(args.input, stride=args.stride, fps=args.fps, max_frames=args.max_frames)
    from referformer.inference.propagation_prompts import read_prompt_files  # numpy / PIL only

    prompts, palette = read_prompt_files(args.mask, (source.info.height, source.info.width), args.objects)
    check_output_dir(args.out, args.overwrite)
    from referformer.inference.device import resolve_device  # imports torch
    from referformer.inference.propagation import PropagationSession
    from referformer.inference.propagators import load_propagator

    device = resolve_device(args.device)
    backend = load_propagator(args.propagator, device, short_side=args.short_side)
    with PropagationSession(backend, source, window=args.window, progress=not args.quiet) as session:
        session.load()  # decodes the input into a temporary folder: the frame names are known after it
        for prompt in prompts:
            session.frame_index(prompt.frame)
        summary = propagate_to_folder(session, prompts, palette, args.out, source=source, overwrite=args.overwrite,
                                      save_overlay=args.save_overlay, propagator=args.propagator)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(f"wrote {summary['out_dir']} ({summary['num_frames']} frames)")
        for obj in summary["objects"]:
            print(f"  object {obj['object_id']}: mask in {obj['num_frames_with_mask']}/{summary['num_frames']} frames")
    return 0


def propagate_to_folder(session: Any, prompts: list[Any], palette: list[int], out_dir: str | Path, *,
                        source: Any = None, overwrite: bool = False, save_overlay: bool = True,
                        propagator: str | None = None) -> dict[str, Any]:
    """Run ``session`` (a loaded :class:`~referformer.inference.propagation.PropagationSession`) on
    ``prompts`` and write every output under ``out_dir``; returns the summary (``out_dir``,
    ``results``, ``overlay``, ``masks``, ``input``, ``num_frames``, ``complete``, ``objects``)."""
    from referformer.inference.propagation_output import LABELS_DIR, PropagationWriter

    assert session.size is not None, "load() the session first"
    height, width = session.size
    object_ids = sorted({o for p in prompts for o in p.masks})
    info = getattr(source, "info", None)
    metadata = {"task": "propagation", "propagator": propagator or getattr(session.backend, "name", None),
                "input": str(info.path) if info else None, "kind": info.kind if info else None,
                "objects": object_ids,
                "prompts": [{"frame": session.names[session.frame_index(p.frame)], "objects": sorted(p.masks)}
                            for p in prompts]}
    fps = source.sampled_fps if source is not None else None
    with PropagationWriter(out_dir, object_ids, palette, width=width, height=height, fps=fps, metadata=metadata,
                           overwrite=overwrite, save_overlay=save_overlay, background=True) as writer:
        for window in session.run(prompts, with_images=save_overlay):
            writer.write_window(window, window.images)
        if source is not None and source.incomplete_reason is not None:
            writer.mark_incomplete(source.incomplete_reason)
        results = writer.close()
    counts = writer.writer.frames_with_mask
    return {
        "out_dir": str(writer.out_dir),
        "results": str(writer.out_dir / "results.json"),
        "overlay": str(writer.out_dir / "overlay.mp4") if save_overlay else None,
        "masks": str(writer.out_dir / LABELS_DIR),
        "input": metadata["input"],
        "num_frames": results["num_frames"],
        "complete": results["complete"],
        "objects": [{"object_id": o, "score": s["score"], "num_frames_with_mask": counts[k]}
                    for k, (o, s) in enumerate(zip(object_ids, results["sentences"]))],
    }
