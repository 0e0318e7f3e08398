"""Samples per second of every training loader on the format-exact fixtures.

    python -m benchmarks.data_loaders [--samples 40] [--workers 0 2] [--fixtures DIR]

Generates the fixtures with ../shared/reference/formats/make_fixtures.py and make_mevis_fixture.py
(64x96 frames, so the cost is dominated by the augmentation: clips come out at 288-640 px like
real training data) unless ``--fixtures`` points at an existing output, then loads ``--samples``
samples of each loader through a ``DataLoader`` (batch size 1, the training transforms) and prints
a table. Real datasets have larger source frames (720p for Ref-YouTube-VOS), so absolute numbers
there are lower: run with ``--root`` on real data for those.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from referformer.data import build_dataset, make_data_loader

SHARED = Path(os.environ.get("REFERFORMER_SHARED_REFERENCE",
                             Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


def make_fixtures(out: Path) -> tuple[Path, Path]:
    gen = SHARED / "formats"
    subprocess.run([sys.executable, str(gen / "make_fixtures.py"), "--out", str(out / "five")],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(gen / "make_mevis_fixture.py"), "--out", str(out / "mevis")],
                   check=True, capture_output=True)
    return out / "five" / "data", out / "mevis" / "mevis"


def loaders(data: Path, mevis: Path) -> list[tuple[str, str, Path, dict]]:
    return [
        ("ytvos", "ytvos", data / "ref-youtube-vos", {}),
        ("davis", "davis", data / "ref-davis", {}),
        ("a2d", "a2d", data / "a2d_sentences", {}),
        ("refcoco (images, T=1)", "refcoco", data / "coco", {}),
        ("refcoco (pseudo-video)", "refcoco", data / "coco", {"num_frames": 5}),
        ("mevis", "mevis", mevis, {}),
        ("concat (joint)", "concat", data, {}),
    ]


def measure(dataset, samples: int, workers: int) -> float:
    loader = make_data_loader(dataset, batch_size=1, shuffle=True, num_workers=workers, seed=0)
    done, start = 0, None
    while done < samples:
        for _ in loader:
            if start is None:  # exclude worker start-up and the first sample
                start = time.perf_counter()
                continue
            done += 1
            if done >= samples:
                break
    return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--fixtures", type=Path, help="existing make_fixtures.py output (with mevis/ beside)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fixtures:
            data, mevis = args.fixtures / "five" / "data", args.fixtures / "mevis" / "mevis"
        else:
            data, mevis = make_fixtures(Path(tmp))
        header = f"| {'loader':<24} | {'samples':>7} | " + " | ".join(f"{w} workers [samples/s]" for w in args.workers) + " |"
        print(header)
        print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
        for label, name, root, opts in loaders(data, mevis):
            ds = build_dataset(name, root, "train", **opts)
            rates = [measure(ds, args.samples, w) for w in args.workers]
            print(f"| {label:<24} | {len(ds):>7} | " + " | ".join(f"{r:>{len(str(w)) + 21}.1f}" for w, r in zip(args.workers, rates)) + " |")
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          "clips of 5 frames at 288-640 px (training augmentation)")


if __name__ == "__main__":
    main()
