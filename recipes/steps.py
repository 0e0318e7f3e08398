"""What the step-by-step recipes share (``propagator_tiny.py``, ``tracklets_tiny.py``): the recipe's data,
a resumable ``referformer train`` run, a ``referformer evaluate --json`` report and the timed step loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from referformer.engine.synthetic_tiny import DATA_SEED, SPLIT_VIDEOS


def make_data(work: Path) -> Path:
    """``referformer synth`` with synthetic-tiny's seed and sizes (500 / 100 / 100 videos) into
    ``work/data``; a split already there is kept. Returns the data folder."""
    data = work / "data"
    for split, videos in SPLIT_VIDEOS.items():
        if not (data / split).is_dir():
            subprocess.run([sys.executable, "-m", "referformer", "synth", "--out", str(data), "--seed", str(DATA_SEED),
                            "--videos", str(videos), "--split", split, "--quiet"], check=True)
    return data


def train(work: Path, recipe: str, run_name: str, extra: Sequence[str] = (), init: str | None = None) -> Path:
    """``referformer train --recipe RECIPE --root WORK/data --out WORK/RUN_NAME``: resumed when the run
    has a checkpoint, else started from ``init`` when given. Returns the run's ``last.pth``."""
    run = work / run_name
    argv = [sys.executable, "-m", "referformer", "train", "--recipe", recipe, "--root", str(work / "data"),
            "--out", str(run), *extra]
    if (run / "last.pth").is_file():
        argv.append("--resume")
    elif init is not None:
        argv += ["--init", init]
    subprocess.run(argv, check=True)
    return run / "last.pth"


def evaluate(options: Sequence[str]) -> dict:
    """``referformer evaluate OPTIONS --json --no-progress``: its report."""
    done = subprocess.run([sys.executable, "-m", "referformer", "evaluate", *options, "--json", "--no-progress"],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run_steps(steps: Sequence[str], run: Callable[[str], object]) -> int:
    """Run ``run(step)`` for each step in order, printing each one's wall time. Returns 0."""
    for step in steps:
        start = time.time()
        run(step)
        print(f"step {step}: {time.time() - start:.0f} s", flush=True)
    return 0
