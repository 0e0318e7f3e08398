"""SAM 2's video predictor as a propagation back end (optional: ``pip install "referformer[sam2]"``).

SAM 2 (``facebookresearch/sam2``, PyPI ``sam2``) tracks each object from the frames where its mask
is given ("conditioning frames", which it reads at every frame whatever the direction) and a memory
of the last ``num_maskmem`` frames. The adapter drives its public video API per pass
(``init_state``, ``add_new_mask``, ``propagate_in_video(start_frame_idx, max_frame_num_to_track,
reverse)``) with two changes that keep memory flat with the length of the video:

* frames are not loaded by SAM 2 (its ``init_state`` decodes the whole video into memory): the
  state's ``images`` is a lazy view of the scheduler's spilled frames, already resized to SAM 2's
  square input (``image_size``, 1024 for the released models) as its own loader does;
* per object, the per-frame outputs older than what SAM 2 reads again (``num_maskmem`` frames at
  ``memory_temporal_stride_for_eval``, and ``max_obj_ptrs_in_encoder`` object pointers) are dropped
  as the pass moves on; the results are unchanged (SAM 2 looks those frames up with ``dict.get``).

Objects are tracked independently by SAM 2 (no exclusivity); the scheduler merges them into one
label per pixel. Probabilities are ``sigmoid`` of SAM 2's mask logits (objects it finds absent get
``NO_OBJ_SCORE``, i.e. probability 0).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from referformer.errors import UserError
from referformer.inference.propagation import FrameReader, PassPrompt

__all__ = ["SAM2_INSTALL_HINT", "Sam2Propagator", "load_sam2", "sam2_import_error"]

SAM2_INSTALL_HINT = 'pip install "referformer[sam2]"'
_MEAN = (0.485, 0.456, 0.406)  # SAM 2's load_video_frames normalisation
_STD = (0.229, 0.224, 0.225)


def sam2_import_error() -> str | None:
    """Why ``import sam2`` fails here (``None`` when it works)."""
    try:
        import sam2.build_sam  # noqa: F401
    except ImportError as err:
        return str(err)
    return None


def load_sam2(spec: str, device: str | torch.device = "cpu", *, allow_random: bool = False,
              overrides: Sequence[str] = ()) -> Sam2Propagator:
    """A :class:`Sam2Propagator` from ``spec``: ``CONFIG.yaml:CHECKPOINT.pt`` (a SAM 2 config name
    such as ``configs/sam2.1/sam2.1_hiera_t.yaml`` and a checkpoint file), or a Hugging Face id such as
    ``facebook/sam2.1-hiera-tiny`` (from the local cache or the hub). A config alone builds random
    weights, allowed only with ``allow_random`` (tests). ``overrides``: Hydra overrides of the config
    (e.g. ``++model.image_size=256``)."""
    problem = sam2_import_error()
    if problem is not None:
        raise UserError(f"the SAM 2 propagator needs the sam2 package ({problem}): {SAM2_INSTALL_HINT}")
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    device = str(device)
    if spec.endswith((".yaml", ".yml")) or ".yaml:" in spec or ".yml:" in spec:
        config, _, checkpoint = spec.partition(":")
        if not checkpoint and not allow_random:
            raise UserError(f"sam2:{spec} names no checkpoint: use sam2:{config}:CHECKPOINT.pt")
        if checkpoint and not Path(checkpoint).is_file():
            raise UserError(f"SAM 2 checkpoint not found: {checkpoint}")
        predictor = build_sam2_video_predictor(config, checkpoint or None, device=device,
                                               hydra_overrides_extra=list(overrides))
    else:
        try:
            predictor = SAM2VideoPredictor.from_pretrained(spec, device=device)
        except Exception as err:  # hub / cache errors come in many types
            raise UserError(f"cannot load SAM 2 {spec!r} ({str(err).splitlines()[0]}); pass "
                            "sam2:CONFIG.yaml:CHECKPOINT.pt for local files") from None
    return Sam2Propagator(predictor, name=f"sam2:{spec}")


class _LazyFrames:
    """What SAM 2's state calls ``images``: frame ``i`` as a normalised float ``[3, S, S]`` tensor,
    read from the scheduler's frames on demand (nothing is held)."""

    def __init__(self, frames: FrameReader, device: torch.device) -> None:
        self.frames, self.device = frames, device
        self.mean = torch.tensor(_MEAN).view(3, 1, 1)
        self.std = torch.tensor(_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(self.frames[index])).permute(2, 0, 1).float() / 255
        return ((image - self.mean) / self.std).to(self.device)


class Sam2Propagator:
    """A :class:`~referformer.inference.propagation.PropagationBackend` over a ``SAM2VideoPredictor``."""

    def __init__(self, predictor: Any, name: str = "sam2") -> None:
        self.predictor, self.name = predictor, name
        self.image_size = int(predictor.image_size)
        self._dummy: Path | None = None
        p = predictor
        self.keep = max(p.num_maskmem * max(1, getattr(p, "memory_temporal_stride_for_eval", 1)),
                        getattr(p, "max_obj_ptrs_in_encoder", 16)) + 1

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.image_size, self.image_size  # SAM 2 squashes every frame to a square

    def _state(self, frames: FrameReader) -> dict[str, Any]:
        """A fresh inference state over ``frames`` (``init_state`` on a one-frame stand-in folder,
        then pointed at the lazy frames)."""
        if self._dummy is None:
            self._dummy = Path(tempfile.mkdtemp(prefix="referformer-sam2-"))
            Image.new("RGB", (8, 8)).save(self._dummy / "00000.jpg")
        state = self.predictor.init_state(str(self._dummy))
        state["images"] = _LazyFrames(frames, state["device"])
        state["num_frames"] = len(frames)
        state["video_height"] = state["video_width"] = self.image_size  # outputs at the processing size
        state["cached_features"] = {}  # the stand-in frame's features
        return state

    def _prune(self, state: dict[str, Any], frame: int, reverse: bool) -> None:
        for per_object in (state["output_dict_per_obj"], state["frames_tracked_per_obj"]):
            for outputs in per_object.values():
                stored = outputs["non_cond_frame_outputs"] if "non_cond_frame_outputs" in outputs else outputs
                stale = [t for t in stored if (t > frame + self.keep if reverse else t < frame - self.keep)]
                for t in stale:
                    del stored[t]

    @torch.inference_mode()
    def track(self, frames: FrameReader, order: Sequence[int], prompts: Sequence[PassPrompt],
              num_objects: int) -> Iterator[np.ndarray]:
        state = self._state(frames)
        for prompt in prompts:
            for k in np.flatnonzero(prompt.given):
                self.predictor.add_new_mask(state, frame_idx=prompt.index, obj_id=int(k),
                                            mask=torch.from_numpy(prompt.masks[k]))
        reverse = len(order) > 1 and order[1] < order[0]
        size = self.image_size
        steps = self.predictor.propagate_in_video(state, start_frame_idx=order[0],
                                                  max_frame_num_to_track=len(order) - 1, reverse=reverse)
        for expected, (index, object_ids, logits) in zip(order, steps):
            if index != expected:
                raise RuntimeError(f"SAM 2 returned frame {index} where frame {expected} was expected")
            probs = np.zeros((num_objects, size, size), dtype=np.float32)
            probs[list(object_ids)] = torch.sigmoid(logits[:, 0].float()).cpu().numpy()
            self._prune(state, index, reverse)
            yield probs
        self.predictor.reset_state(state)
