"""Streaming segmentation: peak memory and frames/s against video length, and the gain of sharing
the visual backbone across sentences.

    python -m benchmarks.segment                      # ResNet-50 release architecture, random weights
    python -m benchmarks.segment --quick              # tiny config (seconds)
    python -m benchmarks.segment --frames 36 108 --sentences 1 4 --short-side 180

Nothing is downloaded: the weights are random and the tokenizer is the synthetic one (trained in a
second). Table 1 runs the whole ``referformer segment`` path (decode an H.264 video written here,
windows, predictor, PNG/JSON/overlay writers) once per video length, each in a fresh subprocess
so that the peak RSS (``resource.getrusage``, high-water mark of the process) belongs to that
length alone; "model RSS" is the resident size after loading the model, before the video. Table 2
times one window decoded for S sentences sharing one ``encode_video`` against S separate runs
(each sentence alone, the backbone re-run every time).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

SENTENCES = ["a man riding a bike", "the dog on the left", "a red car", "the white bird flying",
             "a woman holding an umbrella", "the small cat", "a person in a blue shirt", "the big truck"]


def make_video(path: Path, frames: int, height: int, fps: int = 30) -> Path:
    """An H.264 video of ``frames`` frames, ``height`` x 16/9 pixels: moving squares on noise."""
    import av

    width = round(height * 16 / 9 / 2) * 2
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for t in range(frames):
            image = background.copy()
            x = (4 * t) % (width - height // 4)
            image[height // 3: height // 3 + height // 4, x: x + height // 4] = (230, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def build_predictor(args: argparse.Namespace, work: Path):
    import torch

    from referformer.inference.predictor import Predictor
    from referformer.models import build_model
    from referformer.presets import release_config, tiny_config
    from referformer.synthetic.tokenizer import build_synthetic_tokenizer, synthetic_vocab_size
    from referformer.text import load_tokenizer

    torch.manual_seed(0)
    config = tiny_config() if args.quick else release_config("resnet50")
    if args.quick:
        config.text_encoder.vocab_size = synthetic_vocab_size()
    model = build_model(config).eval()
    tokenizer = load_tokenizer(build_synthetic_tokenizer(work / "tokenizer"))
    return Predictor(model, tokenizer, device=args.device, dtype=args.dtype, short_side=args.short_side,
                     sentence_batch_size=args.sentence_batch_size)


def rss_mib() -> float:
    """Current resident set size (MiB), from /proc (Linux); NaN elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads), seconds: less sensitive than wall time
    to other processes on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def worker_length(args: argparse.Namespace) -> dict:
    """One video length, the whole segment path; run in a fresh process (``--worker length``)."""
    import torch

    from referformer.commands.segment import segment_to_folder
    from referformer.inference.video_io import open_source

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    video = make_video(work / f"video{args.length}.mp4", args.length, args.height)
    predictor = build_predictor(args, work)
    model_rss = rss_mib()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    summary = segment_to_folder(predictor, open_source(video), SENTENCES[:args.num_sentences],
                                work / f"out{args.length}", window=args.window, progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"frames": summary["num_frames"], "seconds": seconds, "cpu": cpu, "model_rss": model_rss,
            "peak_rss": peak_rss_mib()}


def worker_sharing(args: argparse.Namespace) -> list[dict]:
    """Time one window for S sentences shared vs S single-sentence runs (``--worker sharing``)."""
    import torch

    from referformer.inference.video_io import Frame, iter_windows

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    predictor = build_predictor(args, work)
    rng = np.random.default_rng(0)
    width = round(args.height * 16 / 9 / 2) * 2
    images = rng.integers(0, 255, (args.window, args.height, width, 3), dtype=np.uint8)
    (window,) = iter_windows((Frame(t, f"{t:05d}", im) for t, im in enumerate(images)), args.window)

    def run(sentences: list[str]) -> float:
        start = cpu_seconds()  # CPU time: on a shared machine wall time says more about the neighbours
        with predictor.stream(sentences, spill_dir=work) as stream:
            stream.process(window)
        return cpu_seconds() - start

    run(SENTENCES[:1])  # warm-up
    single = min(run(SENTENCES[:1]) for _ in range(args.repeats))
    rows = []
    for count in args.sentences:
        shared = min(run(SENTENCES[:count]) for _ in range(args.repeats))
        rows.append({"sentences": count, "shared": shared, "separate": count * single})
    return rows


def _spawn(args: argparse.Namespace, worker: str, **extra) -> object:
    argv = [sys.executable, "-m", "benchmarks.segment", "--worker", worker]
    for key, value in {**vars(args), **extra}.items():
        if key in ("worker", "frames", "sentences") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    if worker == "sharing":
        argv += ["--sentences", *map(str, args.sentences)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config instead of ResNet-50 release")
    parser.add_argument("--frames", type=int, nargs="+", default=[36, 300, 1000], help="video lengths")
    parser.add_argument("--height", type=int, default=360, help="source video height (16:9)")
    parser.add_argument("--short-side", type=int, default=360, help="model input short side (360 = original)")
    parser.add_argument("--window", type=int, default=36)
    parser.add_argument("--num-sentences", type=int, default=1, help="sentences in the length table")
    parser.add_argument("--sentences", type=int, nargs="+", default=[1, 4, 8], help="sentence counts (table 2)")
    parser.add_argument("--sentence-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--skip-lengths", action="store_true")
    parser.add_argument("--skip-sharing", action="store_true")
    parser.add_argument("--worker", choices=["length", "sharing"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "length":
        print(json.dumps(worker_length(args)))
        return
    if args.worker == "sharing":
        print(json.dumps(worker_sharing(args)))
        return

    model = "tiny config" if args.quick else "ResNet-50 release (random weights)"
    print(f"# {model}, source {args.height}p, model input short side {args.short_side}, window {args.window}, "
          f"device {args.device} {args.dtype}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="referformer-bench-") as work:
        if not args.skip_lengths:
            print(f"\n## video length ({args.num_sentences} sentence(s), whole segment path incl. writers)\n")
            print("| frames | wall s | frames/s (wall) | CPU s | frames/CPU-s | model RSS (MiB) | peak RSS (MiB) |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for length in args.frames:
                row = _spawn(args, "length", length=length, work=work)
                print(f"| {row['frames']} | {row['seconds']:.1f} | {row['frames'] / row['seconds']:.2f} | "
                      f"{row['cpu']:.1f} | {row['frames'] / row['cpu']:.2f} | "
                      f"{row['model_rss']:.0f} | {row['peak_rss']:.0f} |", flush=True)
        if not args.skip_sharing:
            print(f"\n## sharing the backbone (one window of {args.window} frames)\n")
            print("| sentences | shared (CPU s) | each alone (CPU s) | speed-up |")
            print("|---:|---:|---:|---:|")
            for row in _spawn(args, "sharing", work=work):
                print(f"| {row['sentences']} | {row['shared']:.2f} | {row['separate']:.2f} | "
                      f"{row['separate'] / row['shared']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
