"""Mask propagation: peak memory and frames/s of ``referformer propagate`` against video length.

    python -m benchmarks.propagation                          # propagator-r18 (random weights), 360p
    python -m benchmarks.propagation --preset propagator-tiny --height 120 --frames 40 160 480

Each length runs the whole ``propagate`` path (decode an H.264 video written here, spill the frames,
backward and forward passes from a mask given at the **middle** frame, palette PNGs, results.json and
the overlay) in a fresh subprocess, so that the peak RSS (``resource.getrusage`` high-water mark)
belongs to that length alone; "model RSS" is the resident size after loading the propagator, before
the video. Weights are random (nothing is downloaded): the numbers are about memory and speed, not
accuracy. A table, not an assertion: memory should not grow with the length (frames and one pass's
results go to disk, the memory holds the given frame plus ``memory_frames`` recent frames).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.segment import cpu_seconds, make_video, peak_rss_mib, rss_mib


def worker(args: argparse.Namespace) -> dict:
    """One length, the whole propagate path, in this (fresh) process."""
    import torch
    from PIL import Image

    from referformer.checkpoint import save_pretrained
    from referformer.commands.propagate import propagate_to_folder
    from referformer.inference.propagation import PropagationSession
    from referformer.inference.propagation_prompts import read_prompt_files
    from referformer.inference.propagators import load_propagator
    from referformer.inference.video_io import open_source
    from referformer.models.propagation import build_propagator, propagator_preset
    from referformer.palette import VOC_PALETTE

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    video = make_video(work / f"video{args.length}.mp4", args.length, args.height)
    folder = save_pretrained(build_propagator(propagator_preset(args.preset)), work / f"model{args.length}")
    backend = load_propagator(folder, args.device, short_side=args.short_side)
    model_rss = rss_mib()
    source = open_source(video)
    middle = args.length // 2
    labels = np.zeros((source.info.height, source.info.width), np.uint8)
    h = args.height
    x = (4 * middle) % (source.info.width - h // 4)
    labels[h // 3: h // 3 + h // 4, x: x + h // 4] = 1  # the moving square of make_video at that frame
    mask = Image.fromarray(labels, mode="P")
    mask.putpalette(list(VOC_PALETTE))
    mask_path = work / f"{middle:05d}.png"
    mask.save(mask_path)
    prompts, palette = read_prompt_files([mask_path], (source.info.height, source.info.width))
    start, cpu_start = time.perf_counter(), cpu_seconds()
    with PropagationSession(backend, source, window=args.window, spill_dir=work) as session:
        session.load()
        summary = propagate_to_folder(session, prompts, palette, work / f"out{args.length}", source=source)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"frames": summary["num_frames"], "seconds": seconds, "cpu": cpu, "model_rss": model_rss,
            "peak_rss": peak_rss_mib()}


def _spawn(args: argparse.Namespace, length: int, work: str) -> dict:
    argv = [sys.executable, "-m", "benchmarks.propagation", "--worker", "--length", str(length), "--work", work,
            "--preset", args.preset, "--height", str(args.height), "--window", str(args.window),
            "--threads", str(args.threads), "--device", args.device]
    if args.short_side is not None:
        argv += ["--short-side", str(args.short_side)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="propagator-r18", help="propagator-r18 or propagator-tiny")
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 300, 1000], help="video lengths")
    parser.add_argument("--height", type=int, default=360, help="source video height (16:9)")
    parser.add_argument("--short-side", type=int, default=None, help="processing size (default: the preset's)")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    print(f"# {args.preset} (random weights), source {args.height}p, processing short side "
          f"{args.short_side or 'the preset default'}, window {args.window}, mask at the middle frame, "
          f"device {args.device}, {args.threads} thread(s)\n")
    print("| frames | wall s | frames/s (wall) | CPU s | frames/CPU-s | model RSS (MiB) | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="referformer-bench-") as work:
        for length in args.frames:
            row = _spawn(args, length, work)
            print(f"| {row['frames']} | {row['seconds']:.1f} | {row['frames'] / row['seconds']:.2f} | "
                  f"{row['cpu']:.1f} | {row['frames'] / row['cpu']:.2f} | {row['model_rss']:.0f} | "
                  f"{row['peak_rss']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
