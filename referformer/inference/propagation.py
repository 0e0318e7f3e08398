"""Mask propagation over streamed videos: the ``Propagator`` interface and the scheduler of its passes.

Given frames and one or more objects' masks at one or more frames, a propagator returns every
object's mask and foreground probability in every frame, propagated forward **and** backward from
each given frame; several objects are tracked at once and every pixel gets one label (as DAVIS and
YouTube-VOS masks have).

    from referformer.inference.propagators import load_propagator
    from referformer.inference.propagation import FramePrompt, propagate
    result = propagate(load_propagator("runs/propagator/export"), "clip.mp4",
                       [FramePrompt("00010", {1: mask_a, 2: mask_b})])
    result.labels      # uint8 [T, H, W]: 0 background, else the object id
    result.probs       # float32 [T, K, H, W]: foreground probability of each object (ids in result.object_ids)

How a video is processed (:class:`PropagationSession`), memory flat with its length:

1. **frames**: the source is decoded once, each frame resized to the back end's processing size
   (:meth:`PropagationBackend.input_size`) and spilled to disk (:class:`~.propagation_store.FrameStore`);
2. **backward pass** (when a mask is given after frame 0): from the last given frame down to frame 0;
   its per-frame probabilities are spilled (:class:`~.propagation_store.ResultStore`);
3. **forward pass**: from the first given frame to the end, streamed; each frame is combined with the
   backward pass and handed out window by window (:class:`PropagatedWindow`), at the original size.

Combining the passes, per object and frame: the pass whose nearest given frame of that object is
closer in time wins (the forward pass on ties), so each frame follows the given mask it is nearest
to, in the direction it was propagated from. On a frame where an object's mask is given, that mask is
the result exactly (and other objects lose its pixels). Probabilities are upsampled bilinearly to the
original size; the label of a pixel is the argmax over ``[background, object 1 .. K]`` with
background probability ``prod_k (1 - p_k)`` (ties: background, then the smaller object id).

A back end (:class:`PropagationBackend`) only runs one pass in one direction over frames at its
processing size: :mod:`.propagation_memory` (our space-time-memory network) and :mod:`.propagation_sam2`
(SAM 2's video predictor). :mod:`.propagators` loads them by name.
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from referformer.errors import UserError
from referformer.inference.preprocess import FramesInput, load_frames
from referformer.inference.propagation_store import FrameStore, ResultStore
from referformer.inference.results import SPILL_PREFIX
from referformer.inference.video_io import Frame, FrameSource, iter_windows, open_source
from referformer.inference.windows import FrameWindow

__all__ = ["DEFAULT_WINDOW", "FramePrompt", "FrameReader", "PassPrompt", "PropagatedWindow", "PropagationBackend",
           "PropagationResult", "PropagationSession", "label_map", "propagate"]

DEFAULT_WINDOW = 8  # frames per window: decoding, spilling and hand-out granularity (not a model setting)


@dataclass
class FramePrompt:
    """Masks given at one frame: ``frame`` is a frame name (``"00010"``) or a 0-based position among
    the kept frames; ``masks`` maps object ids (1..254) to bool ``[H, W]`` masks at the original size.
    Where masks of one prompt overlap, the pixel goes to the object listed **last** (drawn on top)."""

    frame: str | int
    masks: Mapping[int, np.ndarray]


@dataclass
class PassPrompt:
    """A prompt as a back end gets it: frame position ``index``, bool ``[K, h, w]`` masks at the
    processing size (one row per object, in object-id order) and bool ``[K]`` ``given`` (rows of
    objects not given at this frame are all False and must be ignored)."""

    index: int
    masks: np.ndarray
    given: np.ndarray


class FrameReader(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...


class PropagationBackend(Protocol):
    """What a propagator implements: one pass in one direction at its own processing size."""

    name: str

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` pixels at which this back end wants frames of ``height x width``."""
        ...

    def track(self, frames: FrameReader, order: Sequence[int], prompts: Sequence[PassPrompt],
              num_objects: int) -> Iterator[np.ndarray]:
        """Yield, for each frame position of ``order`` in turn (consecutive, forward or backward),
        float32 ``[K, h, w]`` foreground probabilities (0 for objects the pass has not met yet).
        ``frames[i]`` is frame ``i`` as RGB ``uint8`` ``[h, w, 3]``; ``prompts`` are every prompt of
        the pass (``order[0]`` is always a prompt frame)."""
        ...


@dataclass
class PropagatedWindow:
    """Consecutive frames of the result.

    start: position of the first frame; names: frame names; object_ids: the ``K`` objects, ascending;
    labels: uint8 ``[T, H, W]`` (0 background, else object id); probs: float32 ``[T, K, H, W]``;
    direction: int8 ``[T, K]``: 0 mask given here, 1 from the forward pass, -1 from the backward
    pass; images: RGB ``uint8`` ``[T, H, W, 3]`` when asked for.
    """

    start: int
    names: list[str]
    object_ids: list[int]
    labels: np.ndarray
    probs: np.ndarray
    direction: np.ndarray
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def masks(self) -> np.ndarray:
        """bool ``[T, K, H, W]``: ``labels == object_ids[k]`` (exclusive)."""
        ids = np.asarray(self.object_ids, dtype=np.uint8)[None, :, None, None]
        return self.labels[:, None] == ids


@dataclass
class PropagationResult:
    """A whole video's result in memory (:func:`propagate`): fields as :class:`PropagatedWindow`."""

    names: list[str]
    object_ids: list[int]
    labels: np.ndarray
    probs: np.ndarray
    direction: np.ndarray = field(repr=False)

    def masks(self, object_id: int) -> np.ndarray:
        """bool ``[T, H, W]`` of one object."""
        return self.labels == object_id


def label_map(probs: np.ndarray | torch.Tensor, object_ids: Sequence[int]) -> np.ndarray:
    """``[..., K, H, W]`` probabilities -> uint8 ``[..., H, W]`` labels: argmax over ``[prod(1 - p),
    p_1 .. p_K]`` (first maximum wins), mapped to ``0`` / ``object_ids``."""
    p = torch.as_tensor(probs, dtype=torch.float32)
    background = torch.prod(1 - p, dim=-3, keepdim=True)
    best = torch.cat([background, p], dim=-3).argmax(dim=-3)
    lookup = torch.tensor([0, *object_ids], dtype=torch.uint8)
    return lookup[best].numpy()


def _resize_frames(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if images.shape[1:3] == size:
        return images
    h, w = size
    return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images])


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool ``[K, H, W]`` -> bool ``[K, h, w]`` (area average >= 0.5)."""
    if masks.shape[-2:] == size:
        return masks.astype(bool)
    resized = F.interpolate(torch.from_numpy(masks.astype(np.float32))[None], size=size, mode="area")[0]
    return (resized >= 0.5).numpy()


class PropagationSession:
    """One video, ready to propagate any prompts; see the module docstring. Use as a context manager.

    Args:
        backend: the propagator.
        source: a path (video, GIF, image, frame folder), a :class:`FrameSource`, or frames in memory.
        window: frames per window (disk files and hand-out granularity).
        spill_dir: where the temporary frame and result files go (default: the system's temp folder).
        progress: tqdm bars per pass.
    """

    def __init__(self, backend: PropagationBackend, source: str | Path | FrameSource | FramesInput, *,
                 window: int = DEFAULT_WINDOW, spill_dir: str | Path | None = None, progress: bool = False) -> None:
        if window < 1:
            raise UserError(f"window must be at least 1 frame, got {window}")
        self.backend, self.window, self.progress = backend, window, progress
        self._source = open_source(source) if isinstance(source, (str, Path)) else source
        self._folder = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}propagation-", dir=spill_dir))
        self.frames = FrameStore(self._folder, window)
        self.names: list[str] = []
        self.size: tuple[int, int] | None = None  # original (H, W)
        self._positions: dict[str, int] = {}
        self._runs = 0

    def _windows(self) -> Iterator[FrameWindow]:
        if isinstance(self._source, FrameSource):
            return self._source.windows(self.window)
        images = load_frames(self._source)
        frames: Iterable[Frame] = (Frame(t, f"{t:05d}", np.asarray(im)) for t, im in enumerate(images))
        return iter_windows(frames, self.window)

    def load(self) -> list[str]:
        """Decode the source once and spill its frames at the processing size; returns the frame
        names (call before :meth:`run` to check prompts against them)."""
        if self.size is not None:
            return self.names
        bar = tqdm(unit="frame", desc="frames", disable=not self.progress)
        target: tuple[int, int] | None = None
        for window in self._windows():
            if target is None:
                self.size = (int(window.images.shape[1]), int(window.images.shape[2]))
                target = self.backend.input_size(*self.size)
            if window.images.shape[1:3] != self.size:
                raise UserError(f"frame {window.names[0]} is {window.images.shape[2]}x{window.images.shape[1]}, "
                                f"the first frame {self.size[1]}x{self.size[0]}: all frames must have one size")
            self.frames.append(_resize_frames(window.images, target))
            self.names.extend(window.names)
            bar.update(len(window))
        bar.close()
        if not self.names:
            raise UserError("the input has no frame to propagate masks through")
        self._positions = {name: i for i, name in enumerate(self.names)}
        return self.names

    def frame_index(self, frame: str | int) -> int:
        """Position of a frame given by name or position; ``UserError`` when the video has no such frame."""
        names = self.load()
        if isinstance(frame, (int, np.integer)) and not isinstance(frame, bool):
            if not 0 <= int(frame) < len(names):
                raise UserError(f"frame {frame} does not exist: the input has {len(names)} frames")
            return int(frame)
        if str(frame) not in self._positions:
            raise UserError(f"the input has no frame named {frame!r} (its frames are {names[0]} .. {names[-1]}); "
                            "name a mask after its frame, e.g. 00010.png")
        return self._positions[str(frame)]

    def _resolve(self, prompts: Sequence[FramePrompt]) -> tuple[list[int], dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Object ids (ascending) and, per frame position, (bool [K, H, W] exclusive masks, given [K])."""
        self.load()
        assert self.size is not None
        per_frame: dict[int, dict[int, np.ndarray]] = {}
        for prompt in prompts:
            index = self.frame_index(prompt.frame)
            if index in per_frame:
                raise UserError(f"two prompts for frame {self.names[index]}: give each frame's objects in one mask")
            masks = {}
            for object_id, mask in prompt.masks.items():
                mask = np.asarray(mask).astype(bool)
                if mask.shape != self.size:
                    raise UserError(f"the mask of object {object_id} at frame {self.names[index]} is "
                                    f"{mask.shape[1] if mask.ndim == 2 else '?'}x{mask.shape[0]}; the frames are "
                                    f"{self.size[1]}x{self.size[0]}")
                if not 1 <= int(object_id) <= 254:
                    raise UserError(f"object ids must be 1..254, got {object_id}")
                masks[int(object_id)] = mask
            per_frame[index] = masks
        object_ids = sorted({o for masks in per_frame.values() for o in masks})
        if not object_ids:
            raise UserError("no object to propagate: give at least one mask")
        resolved = {}
        for index, masks in per_frame.items():
            stack = np.zeros((len(object_ids), *self.size), dtype=bool)
            taken = np.zeros(self.size, dtype=bool)
            for object_id in reversed(list(masks)):  # the object listed last keeps overlapping pixels
                k = object_ids.index(object_id)
                stack[k] = masks[object_id] & ~taken
                taken |= masks[object_id]
            given = np.array([o in masks for o in object_ids])
            resolved[index] = (stack, given)
        return object_ids, resolved

    def run(self, prompts: Sequence[FramePrompt], *, with_images: bool = False) -> Iterator[PropagatedWindow]:
        """Propagate ``prompts`` through the video; yields :class:`PropagatedWindow` s in order."""
        object_ids, resolved = self._resolve(prompts)
        assert self.size is not None and self.frames.size is not None
        self._runs += 1
        num_frames, k = len(self.names), len(object_ids)
        small = self.frames.size
        pass_prompts = [PassPrompt(i, _resize_masks(m, small), g) for i, (m, g) in sorted(resolved.items())]
        prompt_frames = [[i for i, (_, g) in sorted(resolved.items()) if g[o]] for o in range(k)]
        first, last = min(resolved), max(resolved)
        folder = self._folder / f"run{self._runs}"  # this run's backward results, removed at its end
        folder.mkdir()
        try:
            backward = None
            if last > 0:
                backward = ResultStore(folder, self.window, (k, *small), 0, last)
                order = range(last, -1, -1)
                bar = tqdm(total=len(order), unit="frame", desc="backward", disable=not self.progress)
                for index, probs in zip(order, self.backend.track(self.frames, order, pass_prompts, k)):
                    backward.put(index, probs)
                    bar.update(1)
                bar.close()
            forward = self.backend.track(self.frames, range(first, num_frames), pass_prompts, k)
            originals = self._windows() if with_images else None
            bar = tqdm(total=num_frames, unit="frame", desc="forward", disable=not self.progress)
            for start in range(0, num_frames, self.window):
                stop = min(start + self.window, num_frames)
                small_probs = np.zeros((stop - start, k, *small), dtype=np.float32)
                direction = np.zeros((stop - start, k), dtype=np.int8)
                for t in range(start, stop):
                    ahead = next(forward) if t >= first else None
                    behind = backward[t] if backward is not None and t <= last else None
                    for o in range(k):
                        use_forward = _forward_is_nearer(prompt_frames[o], t)
                        source = ahead if use_forward else behind
                        if source is not None:
                            small_probs[t - start, o] = source[o]
                            direction[t - start, o] = 1 if use_forward else -1
                probs = _upsample(small_probs, self.size)
                for t in range(start, stop):
                    if t in resolved:  # the given masks, exactly; other objects lose their pixels
                        masks, given = resolved[t]
                        union = masks[given].any(axis=0)
                        probs[t - start][:, union] = 0.0
                        probs[t - start][given] = masks[given]
                        direction[t - start][given] = 0
                images = next(originals).images if originals is not None else None
                bar.update(stop - start)
                yield PropagatedWindow(start, self.names[start:stop], object_ids, label_map(probs, object_ids), probs,
                                       direction, images)
            bar.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove the temporary files."""
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> PropagationSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forward_is_nearer(prompt_frames: list[int], t: int) -> bool:
    """Whether frame ``t`` takes an object's forward pass: its nearest given frame at or before ``t``
    is at least as close as its nearest given frame at or after ``t`` (forward wins ties)."""
    i = bisect.bisect_right(prompt_frames, t)
    before = t - prompt_frames[i - 1] if i > 0 else None
    j = bisect.bisect_left(prompt_frames, t)
    after = prompt_frames[j] - t if j < len(prompt_frames) else None
    if before is None:
        return False
    return after is None or before <= after


def _upsample(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``[T, K, h, w]`` -> ``[T, K, H, W]``, bilinear (identity at the same size)."""
    if probs.shape[-2:] == size:
        return probs
    out = F.interpolate(torch.from_numpy(probs), size=size, mode="bilinear", align_corners=False)
    return out.clamp_(0, 1).numpy()


def propagate(backend: PropagationBackend, source: str | Path | FrameSource | FramesInput,
              prompts: Sequence[FramePrompt], *, window: int = DEFAULT_WINDOW, spill_dir: str | Path | None = None,
              progress: bool = False) -> PropagationResult:
    """Propagate ``prompts`` through ``source`` and return the whole result in memory (for long videos
    use :class:`PropagationSession` or ``referformer propagate``, which write window by window)."""
    with PropagationSession(backend, source, window=window, spill_dir=spill_dir, progress=progress) as session:
        windows = list(session.run(prompts))
    return PropagationResult(
        names=[n for w in windows for n in w.names], object_ids=windows[0].object_ids,
        labels=np.concatenate([w.labels for w in windows]), probs=np.concatenate([w.probs for w in windows]),
        direction=np.concatenate([w.direction for w in windows]))
