"""Training step time: forward + criterion + backward + AdamW step, ours vs. the reference mode.

    python -m benchmarks.training_step [--batch 1 2] [--frames 5] [--size 288 512]
        [--preset resnet50-release] [--steps 2] [--amp none|bf16|fp16] [--fused-adamw] [--device cpu]
        [--sentences-per-clip S]

Random weights, random frames and one box/mask target per clip (the dataset target contract of
``referformer.engine.targets``), the engine's ``SetCriterion`` (Hungarian matcher, all aux layers)
and AdamW over the trainable parameters. The reference mode (``fastpath.reference_mode``) uses the
per-level ``grid_sample`` deformable attention and the grouped-conv mask head like the original;
ours uses the gather deformable attention and the matmul mask head (both under autograd). The first
step is a warm-up; the table shows the mean of the next ``--steps`` steps and the loss of the first
step of each mode (the two must agree).

``--sentences-per-clip S``: every batch row is a (clip, sentence) pair with S different sentences on
each of ``batch`` clips (``batch * S`` rows, the original layout), and a third mode, "shared", runs the
backbone once per clip (``forward(clip_index=...)``, the ``--sentences-per-clip`` training option).
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from referformer.models import build_model
from referformer.models.fastpath import reference_mode
from referformer.presets import get_preset


def make_batch(batch: int, frames: int, size: tuple[int, int], vocab: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    h, w = size
    clips = torch.randn(batch, frames, 3, h, w, generator=g)
    targets = []
    for _ in range(batch):
        masks = torch.zeros(frames, h, w, dtype=torch.bool)
        masks[:, h // 4: h // 2, w // 3: w // 2] = True
        boxes = torch.tensor([[(w // 3 + w // 2) / 2 / w, (h // 4 + h // 2) / 2 / h, (w // 2 - w // 3) / w,
                               (h // 2 - h // 4) / h]]).repeat(frames, 1)
        targets.append({"masks": masks.to(device), "boxes": boxes.to(device),
                        "valid": torch.ones(frames, dtype=torch.int32, device=device),
                        "labels": torch.zeros(frames, dtype=torch.int64, device=device)})
    ids = torch.randint(3, vocab, (batch, 10), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    return clips.to(device), ids.to(device), torch.ones_like(ids), targets


def main(argv: list[str] | None = None) -> int:
    from referformer.engine.criterion import SetCriterion

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="resnet50-release")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--size", type=int, nargs=2, default=[288, 512], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) for ours")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--sentences-per-clip", type=int, default=1, metavar="S",
                   help="S sentences per clip (rows = batch * S); adds the shared-backbone mode")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset).config).to(device).train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = SetCriterion(num_decoder_layers=model.config.dec_layers)
    vocab = model.config.text_encoder.vocab_size
    print(f"# {args.preset}, {args.frames} frames {args.size[0]}x{args.size[1]}, device {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("| batch | mode | step seconds | CPU seconds | first loss |")
    print("|---:|---|---:|---:|---:|")
    s = args.sentences_per_clip
    modes = [("ours", False)] + ([("shared", False)] if s > 1 else []) + ([] if args.no_reference else [("reference", True)])
    for batch in args.batch:
        clips, ids, mask, targets = make_batch(batch * s, args.frames, tuple(args.size), vocab, device)
        clips = clips[::s].repeat_interleave(s, 0)  # rows k*s .. k*s+s-1: one clip, s sentences
        clip_index = torch.arange(batch, device=device).repeat_interleave(s)
        for name, ref in modes:
            inputs = (clips[::s], ids, mask) if name == "shared" else (clips, ids, mask)
            extra = {"clip_index": clip_index} if name == "shared" else {}
            model.load_state_dict(initial)
            params = [p for p in model.parameters() if p.requires_grad]
            fused = args.fused_adamw and not ref
            opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4, **({"fused": True} if fused else {}))
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
            amp = torch.autocast(device.type, dtype=dtype) if dtype is not None and not ref else nullcontext()
            times, cpu_times, first_loss = [], [], None
            torch.manual_seed(1)  # same dropout draws in both modes
            with reference_mode(ref):
                for step in range(args.steps + 1):
                    start, cpu = time.perf_counter(), time.process_time()
                    with amp:
                        out = model(*inputs, **extra)
                        loss = criterion.total(criterion(out, targets))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if step == 0:
                        first_loss = float(loss.detach())
                    else:
                        times.append(time.perf_counter() - start)
                        cpu_times.append(time.process_time() - cpu)
            print(f"| {batch}{f' x {s} sentences' if s > 1 else ''} | {name}{' +fused AdamW' if fused else ''}{'' if ref or dtype is None else ' +' + args.amp} "
                  f"| {sum(times) / len(times):.2f} | {sum(cpu_times) / len(cpu_times):.2f} | {first_loss:.5f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
