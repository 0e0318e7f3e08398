"""Score a model on a synthetic split with fixed-size windows (self-contained, no evaluation driver).

Used to measure the bundled ``synthetic-tiny`` model (``python recipes/synthetic_tiny.py --steps
evaluate``), and ``jf_scores`` by ``referformer demo``. Each video is cut into consecutive windows
of ``window`` frames; every window goes through the one inference engine (``Predictor`` with the
per-window query policy: one query per sentence and window, chosen by the mean score over the
window's frames) at the frames' native size, as ``referformer evaluate --dataset synthetic`` runs
the bundled model (the two give the same numbers). ``window=1`` shows the model each frame alone
(no motion visible), ``window=5`` the clips it was trained on. J and F are the DAVIS measures
(:mod:`referformer.evaluation.davis`), averaged over all frames of the expression (frames where
the referent is absent count, as in Ref-YouTube-VOS); J&F = (J + F) / 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from referformer.evaluation.drivers.kinds import group_scores
from referformer.evaluation.measures import boundary_f_measure, region_similarity
from referformer.inference.postprocess import select_query, upsample_mask_logits
from referformer.inference.predictor import Predictor
from referformer.inference.preprocess import preprocess_frames
from referformer.text import tokenize

__all__ = ["ExpressionScore", "ideal_stride_masks", "jf_scores", "mask_stride_cap", "query_jf_split", "score_split",
           "segment_windows", "summarize"]


@dataclass(frozen=True)
class ExpressionScore:
    video: str
    exp_id: str
    expression: str
    j: float
    f: float

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def jf_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Mean DAVIS J and F over frames of bool masks ``[T, H, W]`` (pixels of the original frames)."""
    return float(np.mean(region_similarity(pred, gt))), float(np.mean(boundary_f_measure(pred, gt)))


@torch.inference_mode()
def segment_windows(model: nn.Module, tokenizer: Any, frames: Sequence[Image.Image], sentences: Sequence[str],
                    window: int, short_side: int = 96) -> np.ndarray:
    """Masks of every sentence: bool ``[S, T, H, W]``; windows of ``window`` frames segmented separately
    (a query chosen per window)."""
    predictor = Predictor(model, tokenizer, device=next(model.parameters()).device, sentence_batch_size=16,
                          short_side=short_side, window=window, query_policy="per_window")
    results = predictor.predict(list(frames), list(sentences), window=window)
    return np.stack([r.masks.numpy() for r in results])


def _split_meta(root: Path, split: str) -> dict[str, Any]:
    """``{video id: entry}`` of ``root/meta_expressions/<split>/meta_expressions.json``."""
    return json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())["videos"]


def _split_videos(root: Path, split: str, meta: dict[str, Any],
                  videos: Sequence[str]) -> Iterator[tuple[str, dict, list, np.ndarray]]:
    """``(video id, meta entry, RGB frames, object-id labels uint8 [T, H, W])`` of ``videos`` of
    ``root/<split>``, read one video at a time."""
    for video in videos:
        entry = meta[video]
        frames = [Image.open(root / split / "JPEGImages" / video / f"{name}.jpg").convert("RGB")
                  for name in entry["frames"]]
        labels = np.stack([np.array(Image.open(root / split / "Annotations" / video / f"{name}.png"))
                           for name in entry["frames"]])
        yield video, entry, frames, labels


def score_split(model: nn.Module, tokenizer: Any, root: str | Path, split: str = "test", window: int = 5,
                max_videos: int | None = None, progress: bool = True) -> list[ExpressionScore]:
    """J and F of every expression of ``root/<split>`` (a ``referformer synth`` dataset)."""
    root = Path(root)
    meta = _split_meta(root, split)
    videos = sorted(meta)[:max_videos]
    scores = []
    for video, entry, frames, labels in tqdm(_split_videos(root, split, meta, videos), total=len(videos),
                                             desc=f"{split} window {window}", disable=not progress):
        exp_ids = sorted(entry["expressions"], key=int)
        sentences = [entry["expressions"][e]["exp"] for e in exp_ids]
        masks = segment_windows(model, tokenizer, frames, sentences, window)
        for k, exp_id in enumerate(exp_ids):
            gt = labels == int(entry["expressions"][exp_id]["obj_id"])
            j, f = jf_scores(masks[k], gt)
            scores.append(ExpressionScore(video, exp_id, sentences[k], j, f))
    return scores


def summarize(scores: Sequence[ExpressionScore], kinds_file: str | Path | None = None) -> dict[str, dict[str, float]]:
    """``{group: {"J", "F", "J&F", "count"}}`` for ``all`` and, with the kinds labels, every group of
    :func:`referformer.synthetic.expression_groups` (``trivial``, ``non_trivial``, kinds, ``only_<kind>``),
    computed as ``referformer evaluate`` does (:func:`referformer.evaluation.drivers.kinds.group_scores`)."""
    by_key = {(s.video, s.exp_id): s for s in scores}
    j = float(np.mean([s.j for s in by_key.values()]))
    f = float(np.mean([s.f for s in by_key.values()]))
    out = {"all": {"J": j, "F": f, "J&F": (j + f) / 2, "count": len(by_key)}}
    if kinds_file is not None:
        rows = [{"video": s.video, "expression": s.exp_id, "J": s.j, "F": s.f} for s in by_key.values()]
        for name, group in group_scores(rows, Path(kinds_file))["groups"].items():
            if name != "all":
                out[name] = {"J": group["J"], "F": group["F"], "J&F": group["J&F"], "count": group["count"]}
    return out


@torch.inference_mode()
def query_jf_split(model: nn.Module, tokenizer: Any, root: str | Path, split: str, window: int,
                   max_videos: int | None = None) -> tuple[float, float]:
    """Mean J&F over the expressions of ``root/<split>`` with (the selected query, the best query).

    *Selected*: per window, the query the model scores highest (what inference returns, as
    :func:`score_split`). *Best*: per window, the query whose masks match the referent best (an
    oracle choice): it measures how well the model segments the objects, apart from choosing the
    referred one (the grounding).
    """
    root = Path(root)
    meta = _split_meta(root, split)
    selected, best = [], []
    for _, entry, frames, labels in _split_videos(root, split, meta, sorted(meta)[:max_videos]):
        exps = list(entry["expressions"].values())
        ids, mask = tokenize(tokenizer, [e["exp"] for e in exps])
        chosen_sum = np.zeros(len(exps))
        best_sum = np.zeros(len(exps))
        for start in range(0, len(frames), window):
            clip, size = preprocess_frames(frames[start:start + window], short_side=frames[0].height)
            out = model.decode(model.encode_video(clip[None]), model.encode_text(ids, mask))
            for k, e in enumerate(exps):
                gt = labels[start:start + window] == int(e["obj_id"])
                masks = torch.nn.functional.interpolate(  # as upsample_mask_logits, every query: [T, Q, H, W]
                    out["pred_masks"][k], size=tuple(int(v) for v in size), mode="bilinear",
                    align_corners=False).gt(0).numpy()
                jf = np.array([sum(jf_scores(masks[:, q], gt)) / 2 for q in range(masks.shape[1])]) * len(gt)
                chosen_sum[k] += jf[select_query(out["pred_logits"][k])[0]]
                best_sum[k] += jf.max()
        selected += list(chosen_sum / len(frames))
        best += list(best_sum / len(frames))
    return float(np.mean(selected)), float(np.mean(best))


def ideal_stride_masks(gt: np.ndarray, stride: int = 4) -> np.ndarray:
    """Masks of a perfect prediction at ``stride``: bool ``[T, H, W]`` -> bool ``[T, H, W]``.

    The ground truth is averaged over ``stride`` x ``stride`` cells (the fraction of each cell the
    object covers) and brought back to ``H x W`` the way the model's stride-4 mask logits are
    (:func:`referformer.inference.postprocess.upsample_mask_logits`, bilinear, ``align_corners=False``),
    with the coverage minus 0.5 as the logit, so a pixel is kept where the interpolated coverage
    exceeds one half (a sharper logit map could gain a little at corners; logits of the coverage
    give about the same J&F on the synthetic test split: 0.904). ``H`` and ``W`` must be multiples of ``stride``.
    """
    height, width = gt.shape[-2:]
    if height % stride or width % stride:
        raise ValueError(f"mask size {height}x{width} is not a multiple of the stride {stride}")
    coverage = torch.nn.functional.avg_pool2d(torch.from_numpy(gt).float()[:, None], stride)[:, 0]
    return upsample_mask_logits(coverage - 0.5, (height, width)).gt(0).numpy()


def mask_stride_cap(root: str | Path, split: str = "test", stride: int = 4,
                    max_videos: int | None = None) -> dict[str, float]:
    """``{"J", "F", "J&F", "count"}`` of :func:`ideal_stride_masks` over the expressions of
    ``root/<split>``: the J&F that perfect masks at ``stride`` with a perfect choice of the referent
    would reach (ReferFormer predicts masks at stride 4), all frames counted as in :func:`score_split`."""
    root = Path(root)
    meta = _split_meta(root, split)
    scores = []
    for video, entry, _, labels in _split_videos(root, split, meta, sorted(meta)[:max_videos]):
        for exp_id, e in entry["expressions"].items():
            gt = labels == int(e["obj_id"])
            scores.append(ExpressionScore(video, exp_id, e["exp"], *jf_scores(ideal_stride_masks(gt, stride), gt)))
    return summarize(scores)["all"]
