"""Training data of the tracklet-grounding system (:mod:`referformer.models.tracklets`).

* :class:`FrameInstances` (F_Seg): one item per annotated frame of a Ref-YouTube-VOS / YouTube-VOS /
  ``referformer synth`` layout; every annotated object of the frame is an instance of the one
  foreground class (class-agnostic Mask R-CNN, label 1). Native size, random horizontal flip.
* :class:`GroundTruthTracklets` (F_Gnd): one item per expression; the tracklets of a video are its
  **ground-truth** objects (one tracklet per annotated object, optionally with mask noise), the
  target is the paper's rule (:func:`target_tracklet`: the tracklet of highest tracklet-IoU with the
  referred object's ground truth, over the whole video). The paper trains on the tracklets of its own
  pipeline (F_Seg + F_Prop + tracklet-NMS); see docs/tracklets.md for why and what to measure.

Since the visual and text encoders are frozen, :class:`GroundTruthTracklets` pools every tracklet's
tokens and encodes every expression **once** (a cache built on first use from the model given to
:meth:`GroundTruthTracklets.bind`, after the trainer has loaded ``--init`` / ``--resume`` weights); a
training step then only runs F_Gnd. Items are clips of ``num_frames`` consecutive frames of the cache.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from referformer.data.io import read_label_png, read_rgb
from referformer.data.vos import VOID_ID, VOSVideo
from referformer.data.ytvos import read_expressions
from referformer.errors import UserError
from referformer.models.tracklets import normalized_boxes, tracklet_iou
from referformer.text import tokenize

__all__ = ["FrameInstances", "GroundTruthTracklets", "collate_instances", "collate_tracklet_clips", "target_tracklet"]


def target_tracklet(tracklets: Tensor, ground_truth: Tensor) -> int:
    """The paper's training target: the index of the tracklet (bool ``[P, T, H, W]``) of highest
    tracklet-IoU with the referred object's ground truth (bool ``[T, H, W]``); ties: the lower index."""
    if len(tracklets) == 0:
        raise ValueError("no tracklet to choose from")
    return int(torch.argmax(tracklet_iou(tracklets, ground_truth[None])[:, 0]))


def _object_ids(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if 0 < v < VOID_ID]


class FrameInstances(Dataset):
    """Per-frame instances for F_Seg: item = ``(image float [3, H, W] in 0..1, target)`` with torchvision's
    detection target: ``boxes`` float ``[N, 4]`` xyxy pixel edges, ``labels`` int64 ``[N]`` (all 1),
    ``masks`` uint8 ``[N, H, W]``. ``flip``: random horizontal flip (python's RNG)."""

    def __init__(self, videos: list[VOSVideo], flip: bool = True) -> None:
        self.items = [(v, p) for v in videos for p in v.annotated()]
        if not self.items:
            raise UserError("no annotated frame to train the instance segmenter on (<frame>.png palette masks)")
        self.flip = flip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        video, position = self.items[index]
        image = np.array(read_rgb(video.frame_paths[position]))
        labels = np.asarray(video.labels(position))
        if self.flip and random.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        ids = _object_ids(labels)
        masks = torch.from_numpy(np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool))
        boxes = torch.zeros((len(ids), 4))
        if ids:
            from torchvision.ops import masks_to_boxes

            boxes = masks_to_boxes(masks).float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
        frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        return frame, {"boxes": boxes, "labels": torch.ones(len(ids), dtype=torch.int64), "masks": masks.to(torch.uint8)}


def collate_instances(samples: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[dict[str, Any], list[dict[str, Tensor]]]:
    """-> ``(inputs, targets)``: ``inputs`` ``{"images": [3, H, W] list, "targets": the same list}`` (what
    torchvision's ``MaskRCNN(images, targets)`` takes in training), ``targets`` the per-image dicts."""
    targets = [t for _, t in samples]
    return {"images": [image for image, _ in samples], "targets": targets}, targets


def _noisy(masks: Tensor, radius: int, rng: np.random.Generator) -> Tensor:
    """Each tracklet (bool ``[P, T, H, W]``) dilated (r > 0) or eroded (r < 0) by one random r in
    ``-radius .. radius`` (square structuring element of side ``2|r| + 1``)."""
    out = masks.clone()
    for p in range(len(masks)):
        r = int(rng.integers(-radius, radius + 1))
        if r:
            x = masks[p, :, None].float()
            grown = F.max_pool2d(x if r > 0 else 1 - x, 2 * abs(r) + 1, stride=1, padding=abs(r))[:, 0] > 0.5
            out[p] = grown if r > 0 else ~grown
    return out


class GroundTruthTracklets(Dataset):
    """F_Gnd's training clips on ground-truth tracklets (see the module docstring).

    Args:
        root / split: a Ref-YouTube-VOS-layout dataset (``meta_expressions/<split>/meta_expressions.json``,
            ``<split>/JPEGImages``, ``<split>/Annotations``); expressions without ``obj_id`` are skipped.
        num_frames: frames per clip (consecutive, random start; a shorter video gives all its frames).
        mask_noise: dilate or erode each tracklet by up to this many pixels (0: the exact masks).
        seed: the noise's seed (drawn once, when the cache is built).

    Item: ``{"tokens" [P, t, C], "present" bool [P, t], "boxes" [P, t, 5], "words" [L, Dt],
    "target" int}`` for ``P`` objects of the video and ``t = min(num_frames, T)``.
    """

    def __init__(self, root: str | Path, split: str = "train", num_frames: int = 10, mask_noise: int = 0,
                 seed: int = 0) -> None:
        root = Path(root)
        meta = root / "meta_expressions" / split / "meta_expressions.json"
        if not meta.is_file():
            raise UserError(f"{meta} not found: grounding training needs a Ref-YouTube-VOS-layout split with "
                            "expressions (referformer synth --out DATA writes one)")
        self.expressions = [e for e in read_expressions(meta, root / split / "JPEGImages") if e.obj_ids]
        if not self.expressions:
            raise UserError(f"{meta}: no expression with an obj_id to train on")
        self.annotations = root / split / "Annotations"
        self.num_frames, self.mask_noise, self.seed = num_frames, mask_noise, seed
        self._model: Any = None
        self._tokenizer: Any = None
        self._videos: dict[str, dict[str, Tensor]] | None = None
        self._items: list[tuple[str, Tensor, int]] | None = None

    def bind(self, model: Any, tokenizer: Any) -> None:
        """The model whose frozen encoders make the cache, and its tokenizer (cache built on first item)."""
        self._model, self._tokenizer, self._videos, self._items = model, tokenizer, None, None

    def __len__(self) -> int:
        return len(self.expressions)

    def _labels(self, video_id: str, names: tuple[str, ...], size: tuple[int, int]) -> np.ndarray:
        out = np.zeros((len(names), *size), dtype=np.uint8)
        for t, name in enumerate(names):
            path = self.annotations / video_id / f"{name}.png"
            if path.is_file():
                out[t] = read_label_png(path)
        return out

    @torch.inference_mode()
    def build_cache(self) -> None:
        """Pool every video's ground-truth tracklets and encode every expression with the bound model."""
        from referformer.inference.tracklets import frame_tokens

        if self._model is None:
            raise RuntimeError("GroundTruthTracklets.bind(model, tokenizer) first")
        model, rng = self._model, np.random.default_rng(self.seed)
        device = next(model.parameters()).device
        training = model.training
        model.eval()
        videos: dict[str, dict[str, Tensor]] = {}
        gts: dict[str, tuple[list[int], Tensor]] = {}
        for e in self.expressions:
            if e.video_id in videos:
                continue
            video = np.stack([np.asarray(read_rgb(p)) for p in e.frame_paths])
            labels = self._labels(e.video_id, e.frame_names, video.shape[1:3])
            ids = _object_ids(labels)
            exact = torch.from_numpy(np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool))
            masks = _noisy(exact, self.mask_noise, rng) if self.mask_noise else exact
            tokens, present = frame_tokens(model, video, masks, device)
            videos[e.video_id] = {"tokens": tokens.float().cpu(), "present": present.cpu(),
                                  "boxes": normalized_boxes(masks), "masks": masks}
            gts[e.video_id] = (ids, torch.from_numpy(labels))
        items = []
        for start in range(0, len(self.expressions), 64):
            batch = self.expressions[start:start + 64]
            ids, mask = tokenize(self._tokenizer, [e.caption for e in batch])
            words, padding = model.encode_text(ids.to(device), mask.to(device))
            for e, w, pad in zip(batch, words.float().cpu(), padding.cpu()):
                ids_in_video, labels = gts[e.video_id]
                gt = torch.zeros_like(labels, dtype=torch.bool)
                for obj in e.obj_ids:
                    gt |= labels == int(obj)
                target = target_tracklet(videos[e.video_id]["masks"], gt) if ids_in_video else -1
                items.append((e.video_id, w[~pad], target))
        for entry in videos.values():
            del entry["masks"]
        model.train(training)
        self._videos, self._items = videos, items

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._items is None:
            self.build_cache()
        assert self._items is not None and self._videos is not None
        video_id, words, target = self._items[index]
        if target < 0:  # a video without any annotated object: another expression
            return self[random.randrange(len(self))]
        cached = self._videos[video_id]
        total = cached["tokens"].shape[1]
        length = min(self.num_frames, total)
        start = random.randint(0, total - length)
        clip = slice(start, start + length)
        return {"tokens": cached["tokens"][:, clip], "present": cached["present"][:, clip],
                "boxes": cached["boxes"][:, clip], "words": words, "target": target}


def collate_tracklet_clips(samples: list[dict[str, Any]]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """Clips -> ``(inputs, targets)``: ``inputs`` the keyword arguments of ``TrackletGrounder.forward``
    (``tokens`` ``[B, P, T, C]``, ``words`` ``[B, L, Dt]``, ``word_padding`` / ``tracklet_padding`` /
    ``present`` / ``boxes``), padded with absent tracklets / frames and padding words; ``targets``
    ``[{"target": int64 scalar}]``."""
    b = len(samples)
    p = max(s["tokens"].shape[0] for s in samples)
    t = max(s["tokens"].shape[1] for s in samples)
    length = max(len(s["words"]) for s in samples)
    c, dt = samples[0]["tokens"].shape[-1], samples[0]["words"].shape[-1]
    tokens, boxes = torch.zeros((b, p, t, c)), torch.zeros((b, p, t, 5))
    present = torch.zeros((b, p, t), dtype=torch.bool)
    tracklet_padding = torch.ones((b, p), dtype=torch.bool)
    words, word_padding = torch.zeros((b, length, dt)), torch.ones((b, length), dtype=torch.bool)
    for i, s in enumerate(samples):
        n, m = s["tokens"].shape[:2]
        tokens[i, :n, :m], boxes[i, :n, :m], present[i, :n, :m] = s["tokens"], s["boxes"], s["present"]
        tracklet_padding[i, :n] = False
        words[i, :len(s["words"])], word_padding[i, :len(s["words"])] = s["words"], False
    inputs = {"tokens": tokens, "words": words, "word_padding": word_padding, "tracklet_padding": tracklet_padding,
              "present": present, "boxes": boxes}
    return inputs, [{"target": torch.tensor(s["target"], dtype=torch.int64)} for s in samples]
