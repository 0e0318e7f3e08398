"""``referformer demo``: segment a freshly generated synthetic video with the bundled model.

    referformer demo                      # writes ./referformer-demo/
    referformer demo --out DIR --seed 7   # the same video every time with --seed
    referformer demo --checkpoint DIR     # another model: a bundled name, a folder, hf://..., a published name

Generates one video of the synthetic benchmark (docs/synthetic.md) that no model has seen,
segments several of its referring expressions with the bundled ``synthetic-tiny`` model
(offline: weights, config and tokenizer ship with the package; ``--checkpoint`` runs another),
writes the ``referformer segment`` layout (``results.json``, ``<i>_<slug>/<frame>.png``,
``overlay.mp4``) plus the input frames (``frames/``) and the ground truth (``ground_truth.json``),
and prints J, F and J&F per expression against the generator's exact masks, then how many
expressions picked the referred object: those whose masks overlap its ground truth with IoU >= 0.5
over the whole video (the sum over frames of |mask & truth| divided by the sum of |mask | truth|).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from referformer.commands import help_text

PICKED_IOU = 0.5  # an expression "picked the referred object" when its video IoU reaches this
DEMO_SPLIT = "demo"  # the video's split name in the generator's seeding (never used for training)
DEFAULT_OUT = "referformer-demo"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="segment a fresh synthetic video with the bundled model (offline)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=None, help="video seed (default: a new random one, printed)")
    p.add_argument("--checkpoint", default=None,
                   help="the model to run (default: the bundled synthetic-tiny); any model `segment` accepts")
    p.add_argument("--expressions", type=int, default=4, help="expressions to segment, at most (default 4)")
    p.add_argument("--window", type=int, default=None,
                   help="frames the model sees at once (default: the model's inference settings, 5 as trained)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.set_defaults(run=run)


def pick_expressions(expressions: Any, count: int) -> list[Any]:
    """Up to ``count`` expressions, spread over objects and kind sets (motion-bearing ones first)."""
    ranked = sorted(expressions, key=lambda e: (not ({"motion", "static_action"} & set(e.kinds)), e.obj_id, e.text))
    chosen: list[Any] = []
    used_objects: set[int] = set()
    used_kinds: set[tuple[str, ...]] = set()
    for strict in (True, False):
        for e in ranked:
            if len(chosen) == count:
                return chosen
            if e in chosen:
                continue
            if strict and (e.obj_id in used_objects or tuple(e.kinds) in used_kinds):
                continue
            chosen.append(e)
            used_objects.add(e.obj_id)
            used_kinds.add(tuple(e.kinds))
    return chosen


def video_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU over the whole video of bool masks ``[T, H, W]``: sum over frames of |pred & gt| / sum of
    |pred | gt| (1.0 when both are empty everywhere)."""
    union = int(np.logical_or(pred, gt).sum())
    return float(np.logical_and(pred, gt).sum()) / union if union else 1.0


def count_picked(preds, gts, threshold: float = PICKED_IOU) -> int:
    """How many expressions picked the referred object: ``video_iou(pred, gt) >= threshold`` for
    each pair of bool masks ``[T, H, W]`` of ``preds`` and ``gts``."""
    return sum(video_iou(p, g) >= threshold for p, g in zip(preds, gts, strict=True))


def run(args: argparse.Namespace) -> int:
    import tempfile

    from PIL import Image

    from referformer.commands.segment import segment_to_folder
    from referformer.errors import UserError
    from referformer.inference.engines import load_predictor
    from referformer.inference.video_io import open_source
    from referformer.inference.writers import check_output_dir, decode_mask_rle
    from referformer.engine.synthetic_tiny import BUNDLED_NAME
    from referformer.synthetic.scenes import SceneConfig, render_frame
    from referformer.evaluation.synthetic import jf_scores
    from referformer.synthetic.writer import make_video

    if args.expressions < 1:
        raise UserError(f"--expressions must be at least 1, got {args.expressions}")
    if args.window is not None and args.window < 1:
        raise UserError(f"--window must be at least 1, got {args.window}")
    check_output_dir(args.out, args.overwrite)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    start = time.perf_counter()
    model_name = args.checkpoint or BUNDLED_NAME
    predictor = load_predictor(model_name, device="cpu")

    video = make_video(seed, DEMO_SPLIT, 0, SceneConfig())
    rendered = [render_frame(video.scene, t) for t in range(len(video.frame_names))]
    images = np.stack([rgb for rgb, _, _ in rendered])  # uint8 [T, H, W, 3]
    labels = np.stack([lab for _, lab, _ in rendered])  # uint8 [T, H, W], object ids
    chosen = pick_expressions(video.expressions, args.expressions)
    sentences = [e.text for e in chosen]
    height, width = labels.shape[1:]
    names = list(video.frame_names)
    window = args.window or predictor.settings.stream_window()

    # the demo is `referformer segment` on the video's frames: the same engine, settings and outputs
    with tempfile.TemporaryDirectory(prefix="referformer-demo-") as tmp:
        frames_dir = Path(tmp) / "frames"
        frames_dir.mkdir()
        for name, im in zip(names, images):
            Image.fromarray(im).save(frames_dir / f"{name}.png")
        segment_to_folder(predictor, open_source(frames_dir), sentences, args.out, window=window,
                          overwrite=args.overwrite, save_overlay=not args.no_overlay, progress=False)
        shutil.copytree(frames_dir, args.out / "frames", dirs_exist_ok=True)
    results = json.loads((args.out / "results.json").read_text())
    masks = np.stack([[decode_mask_rle(f["mask_rle"]) for f in s["frames"]] for s in results["sentences"]]) > 0

    rows = []
    truths = [labels == e.obj_id for e in chosen]
    for i, e in enumerate(chosen):
        j, f = jf_scores(masks[i], truths[i])
        iou = video_iou(masks[i], truths[i])
        rows.append({"expression": e.text, "obj_id": e.obj_id, "kinds": list(e.kinds), "trivial": e.trivial,
                     "J": round(j, 4), "F": round(f, 4), "J&F": round((j + f) / 2, 4),
                     "video_IoU": round(iou, 4), "picked": iou >= PICKED_IOU})
    mean = float(np.mean([r["J&F"] for r in rows]))
    picked = count_picked(masks, truths)
    report = {"seed": seed, "model": model_name, "window": window, "expressions": rows, "mean_J&F": mean,
              "picked": picked}
    (args.out / "ground_truth.json").write_text(json.dumps(
        {"seed": seed, "objects": {str(o.obj_id): {"category": o.shape, "colour": o.colour, "size": o.size_class,
                                                   "motion": o.motion} for o in video.scene.objects},
         "report": report}, indent=2) + "\n")

    print(f"synthetic video: seed {seed}, {len(names)} frames of {width}x{height}, "
          f"{len(video.scene.objects)} objects; model {model_name} (window {window}, "
          f"{predictor.settings.query_policy})")
    width_text = max(len(r["expression"]) for r in rows)
    width_kinds = max(len("kinds"), *(len(",".join(r["kinds"])) for r in rows))
    print(f"{'expression':{width_text}s}  {'kinds':{width_kinds}s}  {'J':>5s}  {'F':>5s}  {'J&F':>5s}")
    for r in rows:
        kinds = ",".join(r["kinds"])
        print(f"{r['expression']:{width_text}s}  {kinds:{width_kinds}s}  {r['J']:5.3f}  {r['F']:5.3f}  {r['J&F']:5.3f}")
    print(f"mean J&F {mean:.3f}  ({time.perf_counter() - start:.1f} s)")
    print(f"picked the referred object in {picked} of {len(rows)} expressions "
          f"(IoU >= {PICKED_IOU} over the video with its true masks)")
    print(f"wrote {args.out}/: results.json, overlay.mp4, one mask folder per expression, frames/")
    return 0
