"""Inference speed and peak memory: our fast paths vs. a reference mode that computes like the original.

    python -m benchmarks.inference [--frames 5 36] [--sentences 1 4] [--size 360 640]
        [--preset resnet50-release] [--threads N] [--window 36] [--no-reference] [--device cpu]
        [--dtype float32|bfloat16|float16] [--compile]

Random weights (``build_model``; nothing is downloaded), random frames and fixed random RoBERTa ids.
For each (frames, sentences):

* **ours**: ``encode_video`` once (windows of ``--window`` frames for longer videos, as a streaming
  predictor would), ``encode_text`` once, one ``decode`` of all sentences over the shared clip;
* **reference** (``--reference-mode`` of our own code, ``referformer.models.fastpath.reference_mode``):
  like the original inference script, one full ``forward`` per sentence over all frames at once, the
  visual features recomputed per sentence, per-level ``grid_sample`` deformable attention. Skipped for
  clips longer than ``--reference-max-frames`` (it needs ~0.4 GB per frame).

Both run in the same process; the outputs are checked equal (max |diff| of logits and boxes; the
fraction of mask pixels that differ away from the threshold). Peak memory is the peak resident set
size of the process during the run (sampled every 5 ms, includes the ~0.7 GB of weights) on CPU, and
``torch.cuda.max_memory_allocated`` on CUDA. Wall time and process CPU time are both printed: on a
shared machine (more runnable threads than cores) the CPU-time ratio is the fairer comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from referformer.models import build_model, compile_model
from referformer.models.fastpath import reference_mode
from referformer.presets import get_preset


class PeakMemory:
    """Peak process RSS (CPU) or peak CUDA allocation (GPU) in GB over a ``with`` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_gb = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        peak = 0
        while not self._stop.is_set():
            peak = max(peak, self._rss())
            self._stop.wait(0.005)
        self._peak = max(peak, self._rss())

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_gb = torch.cuda.max_memory_allocated() / 2**30
        else:
            self._stop.set()
            self._thread.join()
            self.peak_gb = self._peak / 2**30


def sentence_ids(num: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    """``num`` RoBERTa-like id rows (<s> ... </s>) of 8 to 14 tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(num):
        n = 8 + (i * 3) % 7
        ids = torch.randint(3, vocab, (n,), generator=g)
        ids[0], ids[-1] = 0, 2
        rows.append(ids)
    return rows


def pad_ids(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.ones(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, (ids != 1).long()


def run_ours(model: torch.nn.Module, frames: torch.Tensor, rows: list[torch.Tensor], window: int) -> list[dict]:
    """Encode the video once per window and decode all sentences at once; -> per window the outputs."""
    ids, mask = pad_ids(rows)
    ids, mask = ids.to(frames.device), mask.to(frames.device)
    text = model.encode_text(ids, mask)
    outs = []
    for start in range(0, frames.shape[1], window):
        visual = model.encode_video(frames[:, start:start + window])
        outs.append(model.decode(visual, text))
    return outs


def run_reference(model: torch.nn.Module, frames: torch.Tensor, rows: list[torch.Tensor]) -> list[dict]:
    """One full forward per sentence over all frames, computed like the original."""
    outs = []
    with reference_mode():
        for r in rows:
            r = r[None].to(frames.device)
            outs.append(model(frames, r, torch.ones_like(r)))
    return outs


def compare(ours: list[dict], ref: list[dict]) -> tuple[float, float, float]:
    """-> (max |logit diff|, max |box diff|, fraction of mask pixels differing with |ref logit| > 1e-3)."""
    d_logit = d_box = 0.0
    flips = total = 0
    out = ours[0]
    for i, r in enumerate(ref):
        d_logit = max(d_logit, (out["pred_logits"][i].float() - r["pred_logits"][0].float()).abs().max().item())
        d_box = max(d_box, (out["pred_boxes"][i].float() - r["pred_boxes"][0].float()).abs().max().item())
        a, b = out["pred_masks"][i].float(), r["pred_masks"][0].float()
        differ = (a > 0) != (b > 0)
        flips += int((differ & (b.abs() > 1e-3)).sum())
        total += b.numel()
    return d_logit, d_box, flips / max(total, 1)


@dataclass
class Row:
    frames: int
    sentences: int
    mode: str
    seconds: float
    cpu_seconds: float
    peak_gb: float
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float, float]:
    """-> (result, wall seconds, process CPU seconds, peak GB)."""
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return result, seconds, cpu_seconds, mem.peak_gb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="resnet50-release")
    p.add_argument("--frames", type=int, nargs="+", default=[5])
    p.add_argument("--sentences", type=int, nargs="+", default=[1, 4])
    p.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    p.add_argument("--window", type=int, default=36, help="frames per encode/decode window of ours")
    p.add_argument("--reference-max-frames", type=int, default=36)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype for ours (GPU); the reference always runs in float32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the heavy parts of ours (compile_model); an untimed first run per shape")
    p.add_argument("--warmup", action="store_true", help="one untimed tiny run first")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset).config).eval().to(device)
    eager_parts = {name: getattr(model, name) for name in model.compile_parts}
    if args.compile:
        compile_model(model)
    ours_parts = {name: getattr(model, name) for name in model.compile_parts}

    def reference(frames: torch.Tensor, ids: list[torch.Tensor]) -> list[dict]:
        """The reference mode always runs the eager modules (never compiled)."""
        for name, part in eager_parts.items():
            setattr(model, name, part)
        try:
            return run_reference(model, frames, ids)
        finally:
            for name, part in ours_parts.items():
                setattr(model, name, part)
    vocab = model.config.text_encoder.vocab_size
    h, w = args.size
    amp = (torch.autocast(device.type, dtype=getattr(torch, args.dtype)) if args.dtype != "float32"
           else nullcontext())
    print(f"# {args.preset}, {h}x{w}, device {device} "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}")
    rows: list[Row] = []
    with torch.inference_mode():
        if args.warmup:
            run_ours(model, torch.randn(1, 2, 3, 64, 96, device=device), sentence_ids(1, vocab), args.window)
        for t in args.frames:
            frames = torch.randn(1, t, 3, h, w, generator=torch.Generator().manual_seed(t)).to(device)
            for s in args.sentences:
                ids = sentence_ids(s, vocab)
                with amp:
                    if args.compile:  # compile for these shapes first: the timed run measures the compiled code
                        _, compile_sec, _, _ = timed(lambda: run_ours(model, frames, ids, args.window), device)
                        print(f"  compiled for {t} frames x {s} sentences: first run {compile_sec:.1f}s", flush=True)
                    ours, sec, cpu, peak = timed(lambda: run_ours(model, frames, ids, args.window), device)
                rows.append(Row(t, s, "ours", sec, cpu, peak))
                if args.no_reference or t > args.reference_max_frames:
                    rows[-1].note = "reference skipped"
                else:
                    ref, rsec, rcpu, rpeak = timed(lambda: reference(frames, ids), device)
                    d_logit, d_box, flips = compare(ours, ref)
                    rows.append(Row(t, s, "reference", rsec, rcpu, rpeak))
                    rows[-2].note = (f"{rsec / sec:.2f}x wall, {rcpu / cpu:.2f}x CPU time; |dlogit| {d_logit:.1e}, "
                                     f"|dbox| {d_box:.1e}, mask flips {flips:.1e}")
                    del ref
                del ours
                r = rows[-2] if rows[-1].mode == "reference" and rows[-2].frames == t else rows[-1]
                print(f"  done {t} frames x {s} sentences: {r.note or f'{sec:.1f}s'}", flush=True)
    print()
    print("| frames | sentences | mode | wall s | frames/s | CPU s | peak memory (GB) | speed-up, equality |")
    print("|---:|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.frames} | {r.sentences} | {r.mode} | {r.seconds:.1f} | {r.fps:.2f} | {r.cpu_seconds:.1f} "
              f"| {r.peak_gb:.1f} | {r.note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
