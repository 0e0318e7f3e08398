"""``referformer segment``: segment the objects that sentences describe in a video, an image or frames.

    referformer segment INPUT -t "a man riding a bike" -t "the dog" --checkpoint CKPT --out DIR

Everything a user can get wrong is checked before the model loads (sentences, numbers, the output
folder, the input, the device and precision), each with a one-line error. Frames stream from
:mod:`referformer.inference.video_io` in windows, go through the predictor, and every window's
results are written at once by :class:`referformer.inference.writers.SegmentationWriter`. See
docs/segment.md.

The model side is the one inference engine, ``referformer.inference.predictor.Predictor``
(``engines.load_predictor(checkpoint, preset=..., tokenizer=..., device=..., dtype=...)``, which gives a
``TrackletPredictor`` for a tracklets folder, and
``predictor.stream(sentences, spill_dir=...)``, see :class:`WindowPredictor`), at the model's
inference settings unless ``--short-side`` / ``--window`` / ``--query-policy`` override them. Each
window is written at once with its provisional masks; at the end the windows whose query was not the
final one are rewritten, the final query/score recorded, and the overlay re-drawn if anything changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm import tqdm

from referformer.errors import UserError
from referformer.inference.video_io import FrameSource, FrameWindow, open_source
from referformer.inference.writers import (
    OVERLAY_MP4,
    RESULTS_JSON,
    SegmentationWriter,
    SentenceWindowResult,
    check_output_dir,
)

if TYPE_CHECKING:
    import torch

    from referformer.checkpoint.settings import InferenceSettings

# Same names as referformer.inference.device.DTYPE_CHOICES and referformer.checkpoint.settings.
# QUERY_POLICIES; repeated so that building the parser (``referformer --help``) does not import torch.
DTYPE_CHOICES = ("fp32", "bf16", "fp16")
QUERY_POLICIES = ("per_video", "per_window")


class SegmentationStream(Protocol):
    """One video, fixed sentences (see :class:`referformer.inference.predictor.SegmentationStream`)."""

    def process(self, window: FrameWindow) -> list[SentenceWindowResult]:
        """Provisional results of one window, one per sentence (in order)."""
        ...

    def finish(self) -> Sequence[Any]:
        """After the last window: per sentence, the final choice (``.query``, ``.score``)."""
        ...

    def corrections(self) -> Iterator[Any]:
        """Windows to rewrite (``.start``, ``.names``, ``.sentence``, ``.result``)."""
        ...

    def close(self) -> None:
        """Remove temporary data."""
        ...


class WindowPredictor(Protocol):
    """What ``segment`` needs from the model: its inference settings and a stream per video."""

    settings: InferenceSettings

    def stream(self, sentences: Sequence[str], *, spill_dir: str | Path | None = None) -> SegmentationStream:
        """Start segmenting one video for ``sentences``; temporary files go under ``spill_dir``."""
        ...


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``referformer segment`` and its options."""
    parser = subparsers.add_parser(
        "segment",
        help="segment the objects described by sentences in a video, image or frame folder",
        description=(
            "Segment, in every frame of INPUT, the object each sentence describes. Writes "
            "results.json, one PNG mask folder per sentence and overlay.mp4 under --out."
        ),
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="a video (mp4, mov, avi, webm, mkv...), a folder of frames (jpg/png), an image or a GIF",
    )
    parser.add_argument(
        "-t",
        "--text",
        action="append",
        required=True,
        metavar="SENTENCE",
        help="a sentence describing one object; repeat for several objects",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="a converted model folder, an official .pth file or the name of a bundled model",
    )
    parser.add_argument("--preset", default=None, help="model preset the checkpoint belongs to")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow arbitrary Python objects in an official .pth (only for files you trust)",
    )
    parser.add_argument(
        "--tokenizer", default=None, metavar="DIR", help="local tokenizer folder (RoBERTa, Hugging Face format)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="reuse an existing output folder")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="N",
        help="frames per clip (default: the model's inference settings, else 36 as the original's DAVIS inference)",
    )
    parser.add_argument(
        "--query-policy",
        choices=QUERY_POLICIES,
        default=None,
        help="per_video: one query per sentence for the whole video (the original); per_window: chosen again "
        "in each window (default: the model's inference settings)",
    )
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--stride", type=int, default=1, metavar="K", help="keep every K-th frame")
    sampling.add_argument("--fps", type=float, default=None, help="keep at most FPS frames per second")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES, help="precision (default fp32)")
    parser.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="PX",
        help="resize frames so that their shorter side is PX pixels before the model (default: the model's "
        "inference settings, 360 for the official checkpoints; masks are always written at the original size)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's heavy parts (same masks; the first window of each size compiles "
        "for minutes: worth it for long videos, mainly on a GPU)",
    )
    parser.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode the next window and write the previous one in background threads while the "
        "model runs (default on)",
    )
    parser.add_argument(
        "--propagate",
        metavar="NAME",
        help="ReferFormer + propagation (the paper's post-process): propagate each sentence's mask from its "
        "top-scoring frame through the whole video with this propagator (a propagator folder or sam2:...; "
        "docs/propagation.md)",
    )
    parser.add_argument("--no-masks", dest="save_masks", action="store_false", help="do not write PNG masks")
    parser.add_argument("--no-overlay", dest="save_overlay", action="store_false", help="do not write overlay.mp4")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.set_defaults(run=run)
    return parser


def check_sentences(sentences: Sequence[str] | None) -> list[str]:
    """Strip the sentences and refuse an empty one (or none at all)."""
    if not sentences:
        raise UserError('give at least one sentence with -t "..."')
    cleaned = [" ".join(s.split()) for s in sentences]
    for i, text in enumerate(cleaned):
        if not text:
            raise UserError(f'sentence {i + 1} (-t) is empty: describe the object, e.g. -t "the dog"')
    return cleaned


def _check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{option} must be at least 1, got {value}")


def load_predictor(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> WindowPredictor:
    """The Predictor of ``--checkpoint`` / ``--preset`` / ``--tokenizer``, with ``--short-side``,
    ``--query-policy`` and ``--compile``."""
    from referformer.inference.engines import load_predictor as load_engine  # imports torch: not at --help time

    return load_engine(
        args.checkpoint,
        preset=args.preset,
        tokenizer=args.tokenizer,
        device=device,
        dtype=dtype,
        unsafe_load=args.unsafe_load,
        compile=args.compile,
        short_side=args.short_side,
        query_policy=args.query_policy,
    )


def segment_to_folder(
    predictor: WindowPredictor,
    source: FrameSource,
    sentences: Sequence[str],
    out_dir: str | Path,
    *,
    window: int | None = None,
    prefetch: bool = True,
    overwrite: bool = False,
    save_masks: bool = True,
    save_overlay: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``predictor`` over ``source`` window by window and write every output under ``out_dir``.

    ``window``: frames per window (default: the predictor's settings, else 36). With ``prefetch``
    the next window is decoded, and the previous one written, in background threads while the
    predictor runs. The sentences are checked (tokenised and encoded) before anything is created.

    Returns the summary: ``out_dir``, ``results``, ``overlay``, ``input``, ``num_frames``,
    ``complete`` and, per sentence, ``text``, ``query``, ``score``, ``mask_dir``, ``num_frames``
    and ``num_frames_with_mask``.
    """
    info = source.info
    metadata = {
        "input": str(info.path),
        "kind": info.kind,
        "source_fps": info.fps,
        "stride": source.stride,
        "sample_fps": source.fps,
    }
    window = window if window is not None else predictor.settings.stream_window()
    with contextlib.ExitStack() as stack:
        # the stream checks and encodes the sentences before anything is created; spilled mask logits
        # live inside the output folder (created by the writer before the first spill, removed at the end)
        stream = stack.enter_context(contextlib.closing(predictor.stream(sentences, spill_dir=Path(out_dir))))
        bar = tqdm(total=source.estimated_length(), unit="frame", desc="segment", disable=not progress)
        stack.callback(bar.close)
        writer = stack.enter_context(
            SegmentationWriter(
                out_dir,
                sentences,
                width=info.width,
                height=info.height,
                fps=source.sampled_fps,
                metadata=metadata,
                overwrite=overwrite,
                save_masks=save_masks,
                save_overlay=save_overlay,
                background=prefetch,
            )
        )
        windows = stack.enter_context(contextlib.closing(source.windows(window, prefetch=prefetch)))
        for frame_window in windows:
            writer.write_window(frame_window.names, frame_window.images, stream.process(frame_window))
            bar.update(len(frame_window))
        if source.incomplete_reason is not None:  # e.g. a truncated video: say so in results.json
            writer.mark_incomplete(source.incomplete_reason)
        choices = stream.finish()
        for fix in stream.corrections():  # windows written with a query that was not the final one
            writer.rewrite_window(fix.start, fix.names, fix.sentence, fix.result)
        writer.set_final([{"query": int(c.query), "score": float(c.score)} for c in choices])
    results_json = writer.close()
    if save_overlay and writer.frames_rewritten:
        # the overlay was drawn with provisional masks: draw it again from the final ones
        frames = (f.image for f in source)
        rerender = tqdm(frames, total=results_json["num_frames"], unit="frame", desc="overlay",
                        disable=not progress)
        writer.rerender_overlay(rerender)
    return {
        "out_dir": str(writer.out_dir),
        "results": str(writer.out_dir / RESULTS_JSON),
        "overlay": str(writer.out_dir / OVERLAY_MP4) if save_overlay else None,
        "input": str(info.path),
        "num_frames": results_json["num_frames"],
        "complete": results_json["complete"],
        "sentences": [
            {
                "text": s["text"],
                "query": s["query"],
                "score": s["score"],
                "mask_dir": s["mask_dir"] if save_masks else None,
                "num_frames": len(s["frames"]),
                "num_frames_with_mask": writer.frames_with_mask[i],
            }
            for i, s in enumerate(results_json["sentences"])
        ],
    }


def run(args: argparse.Namespace) -> int:
    """Check every input, load the model, segment, write outputs, report."""
    sentences = check_sentences(args.text)
    _check_positive(args.window, "--window")
    _check_positive(args.short_side, "--short-side")
    from referformer.checkpoint import resolve_checkpoint  # imports torch

    resolve_checkpoint(args.checkpoint)  # a path, or the name of a bundled model
    if args.tokenizer is not None and not Path(args.tokenizer).is_dir():
        raise UserError(f"tokenizer folder not found: {args.tokenizer}")
    check_output_dir(args.out, args.overwrite)
    source = open_source(args.input, stride=args.stride, fps=args.fps, max_frames=args.max_frames)
    from referformer.inference.device import resolve_device, resolve_dtype  # imports torch

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    predictor = load_predictor(args, device, dtype)
    propagator = None
    if args.propagate:  # checked before anything is written
        from referformer.inference.propagators import load_propagator

        propagator = load_propagator(args.propagate, device)
    summary = segment_to_folder(
        predictor,
        source,
        sentences,
        args.out,
        window=args.window,
        prefetch=args.prefetch,
        overwrite=args.overwrite,
        save_masks=args.save_masks,
        save_overlay=args.save_overlay,
        progress=not args.quiet,
    )
    if propagator is not None:  # the paper's post-process, on the finished folder
        from referformer.inference.post_propagation import propagate_segmentation

        after = propagate_segmentation(args.out, source, propagator, progress=not args.quiet)
        for sentence, update in zip(summary["sentences"], after):
            sentence.update(update)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        print(f"wrote {summary['out_dir']} ({summary['num_frames']} frames)")
        for i, s in enumerate(summary["sentences"]):
            score = "n/a" if s["score"] is None else f"{s['score']:.3f}"
            print(
                f"  [{i}] {s['text']!r}: query {s['query']}, score {score}, "
                f"mask in {s['num_frames_with_mask']}/{s['num_frames']} frames"
            )
    return 0
