"""Tracklet construction and tracklet-NMS over a video (Liang et al. 2021, section 3.1).

1. **Key frames**: ``K`` frames sampled uniformly, ``round(linspace(0, T - 1, K))`` (numpy rounds halves
   to even) with duplicates removed (``T < K`` gives every frame once): :func:`key_frame_indices`.
2. **Candidates**: the instance segmenter (:class:`~referformer.models.tracklets.InstanceSegmenter`) on
   each key frame; a candidate is a non-empty mask with its confidence.
3. **Propagation**: the candidates of one key frame are propagated **together**, as several objects of
   one prompt at that frame, forward and backward through the whole video: ``K`` runs of one
   :class:`~referformer.inference.propagation.PropagationSession` per video (the frames are decoded and
   spilled once). Objects share the pixels (one label per pixel, as the propagators produce), so
   where two candidates of one key frame overlap the more confident one keeps the pixels (it is listed
   last in the prompt); a candidate left with no pixel on its own key frame is dropped. Propagating
   each candidate alone would cost ``N`` runs instead of ``K`` and let duplicates of one object survive
   as identical tracklets, which tracklet-NMS then removes anyway.
4. **Tracklets**: a candidate's tracklet is its label map (bool ``[T, H, W]``), its propagation
   probability at a frame the mean foreground probability inside that mask
   (:func:`~referformer.models.tracklets.frame_probabilities`; 1 on its key frame, where the mask is given).
5. **Tracklet-NMS** (:func:`~referformer.models.tracklets.tracklet_nms`): score = confidence x mean
   propagation probability over all ``T`` frames; at most ``P`` kept, by decreasing score.

Memory: every candidate's tracklet is held as bool ``[T, H, W]`` at the original size until NMS
(``N x T x H x W`` bytes for ``N`` candidates), the propagation itself is windowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from referformer.errors import UserError
from referformer.inference.preprocess import FramesInput, load_frames
from referformer.inference.propagation import FramePrompt, PropagationBackend, PropagationSession
from referformer.models.tracklets import InstanceSegmenter, tracklet_nms, tracklet_scores

__all__ = ["MAX_OBJECTS", "Tracklets", "build_tracklets", "key_frame_indices", "video_array"]

MAX_OBJECTS = 254  # object ids a prompt can carry (uint8 labels, 0 = background)


@dataclass
class Tracklets:
    """The kept tracklets of one video, by decreasing score.

    masks: bool ``[P, T, H, W]`` at the original size; scores: ``[P]`` tracklet scores (confidence x
    mean propagation probability); confidences: ``[P]`` the segmenter's; frame_probs: ``[P, T]``
    propagation probability per frame; key_frames: the sampled key frames (positions); origins:
    ``[P]`` the key frame each tracklet was proposed on; num_candidates: tracklets before NMS.
    """

    masks: Tensor
    scores: Tensor
    confidences: Tensor
    frame_probs: Tensor
    key_frames: list[int]
    origins: list[int]
    num_candidates: int

    def __len__(self) -> int:
        return len(self.masks)


def key_frame_indices(num_frames: int, num_key_frames: int) -> list[int]:
    """``sorted(set(round(linspace(0, T - 1, K))))``: ``K`` uniformly spaced frames, first and last
    included (fewer when ``T < K``)."""
    if num_frames < 1 or num_key_frames < 1:
        raise UserError(f"need at least one frame and one key frame (got T={num_frames}, K={num_key_frames})")
    return sorted({int(i) for i in np.round(np.linspace(0, num_frames - 1, num_key_frames))})


def video_array(frames: FramesInput) -> np.ndarray:
    """Frames (a folder, a ``[T, H, W, 3]`` array, a list of images ...) as RGB uint8 ``[T, H, W, 3]``."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.dtype == np.uint8 and frames.shape[-1] == 3:
        return frames
    images = [np.asarray(im) for im in load_frames(frames)]
    if len({im.shape for im in images}) != 1:
        raise UserError("all frames of a video must have one size")
    return np.stack(images)


def _candidates(segmenter: InstanceSegmenter, image: np.ndarray) -> tuple[Tensor, Tensor]:
    """The non-empty candidates of one frame: (bool ``[N, H, W]``, scores ``[N]``), by decreasing score."""
    out = segmenter([torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255])[0]
    masks, scores = out["masks"].bool().cpu(), out["scores"].float().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    masks, scores = masks[order], scores[order]
    keep = masks.flatten(1).any(1)
    return masks[keep][:MAX_OBJECTS], scores[keep][:MAX_OBJECTS]


def _propagate_key_frame(session: PropagationSession, key: int, masks: Tensor,
                         num_frames: int) -> tuple[Tensor, Tensor]:
    """Propagate one key frame's candidates (id ``i + 1`` for candidate ``i``; the most confident listed
    last) -> (bool tracklets ``[N, T, H, W]``, propagation probabilities ``[N, T]``)."""
    n = len(masks)
    prompt = FramePrompt(key, {i + 1: masks[i].numpy() for i in reversed(range(n))})
    tracks = torch.zeros((n, num_frames, *masks.shape[-2:]), dtype=torch.bool)
    probs = torch.zeros((n, num_frames), dtype=torch.float32)
    for window in session.run([prompt]):
        ids = torch.as_tensor(window.object_ids)
        labels = torch.from_numpy(window.labels)  # [t, H, W]
        window_masks = (labels[:, None] == ids[None, :, None, None].to(labels.dtype)).transpose(0, 1)  # [N, t, H, W]
        window_probs = torch.from_numpy(window.probs).transpose(0, 1)  # [N, t, H, W]
        area = window_masks.flatten(2).sum(-1)
        inside = (window_probs * window_masks).flatten(2).sum(-1)
        stop = window.start + len(window)
        tracks[:, window.start:stop] = window_masks
        probs[:, window.start:stop] = torch.where(area > 0, inside / area.clamp(min=1), torch.zeros_like(inside))
    return tracks, probs


def build_tracklets(frames: FramesInput, segmenter: InstanceSegmenter, propagator: PropagationBackend,
                    num_key_frames: int = 7, max_tracklets: int = 10, iou_threshold: float = 0.5,
                    window: int = 8) -> Tracklets:
    """Candidates on ``num_key_frames`` key frames, propagated through the video, filtered by
    tracklet-NMS to at most ``max_tracklets`` (see the module docstring).

    frames: a video (RGB uint8 ``[T, H, W, 3]`` or anything :func:`video_array` reads); segmenter:
    F_Seg; propagator: F_Prop (a :class:`~referformer.inference.propagation.PropagationBackend`);
    iou_threshold: tracklet-IoU above which a lower-scored tracklet is suppressed; window: frames per
    propagation window. Returns :class:`Tracklets` (possibly empty when no candidate was found)."""
    video = video_array(frames)
    num_frames, height, width = video.shape[:3]
    keys = key_frame_indices(num_frames, num_key_frames)
    all_masks, all_probs, all_conf, origins = [], [], [], []
    with PropagationSession(propagator, video, window=window) as session:
        for key in keys:
            masks, confidences = _candidates(segmenter, video[key])
            if not len(masks):
                continue
            tracks, probs = _propagate_key_frame(session, key, masks, num_frames)
            alive = tracks[:, key].flatten(1).any(1)  # an overlapped candidate may lose every pixel
            all_masks.append(tracks[alive])
            all_probs.append(probs[alive])
            all_conf.append(confidences[alive])
            origins += [key] * int(alive.sum())
    if not origins:
        empty = torch.zeros(0)
        return Tracklets(torch.zeros((0, num_frames, height, width), dtype=torch.bool), empty, empty,
                         torch.zeros((0, num_frames)), keys, [], 0)
    masks, probs, conf = torch.cat(all_masks), torch.cat(all_probs), torch.cat(all_conf)
    scores = tracklet_scores(conf, probs)
    kept = tracklet_nms(masks, scores, iou_threshold, max_tracklets)
    return Tracklets(masks[kept], scores[kept], conf[kept], probs[kept], keys, [origins[i] for i in kept.tolist()],
                     len(origins))
