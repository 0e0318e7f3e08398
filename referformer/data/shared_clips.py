"""Several sentences on one clip: training items that share their frames.

The original trains on one ``(clip, sentence)`` pair per item, so a clip's frames go through the
backbone once per sentence, and nothing in a batch contrasts two sentences on the same frames.
:class:`SharedClipSentences` (our option, off in every official recipe) draws a clip of a video and up to
``sentences`` expressions of that video on exactly the same frames and augmentation: the backbone runs
once for all of them (``ReferFormer.forward(clip_index=...)``) and the sentences of one clip point at
different objects, which is the signal grounding is learnt from. Used by the ``synthetic-tiny`` recipe.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import torch
from torch.utils.data import Dataset

from referformer.data.seeding import isolated_rng
from referformer.data.video_clips import VideoClipDataset

__all__ = ["SharedClipSentences"]

MAX_REDRAWS = 100


class SharedClipSentences(Dataset):
    """Items ``(frames [T, 3, H, W], [target_1, ..., target_s])``: one clip, ``1 <= s <= sentences``
    expressions of its video, each target as :class:`VideoClipDataset` makes it (the frames of all of
    them are identical; an expression whose object is not visible in the clip is left out).

    One item per clip start of every expression, as the wrapped dataset (item ``i`` is led by its
    item ``i``; wrap in ``referformer.engine.synthetic_tiny.ResampledDataset`` for random epochs). The other
    expressions of the item's video are drawn without replacement, those naming a different object first.
    """

    def __init__(self, dataset: VideoClipDataset, sentences: int) -> None:
        if sentences < 1:
            raise ValueError(f"sentences must be >= 1, got {sentences}")
        self.dataset = dataset
        self.sentences = int(sentences)
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for index, (k, start) in enumerate(dataset.metas):
            groups[(dataset.expressions[k].expression.video_id, start)].append(index)
        self._group_of = {i: members for members in groups.values() for i in members}

    def __len__(self) -> int:
        return len(self.dataset)

    def _object(self, index: int) -> tuple[str, ...]:
        k, _ = self.dataset.metas[index]
        return self.dataset.expressions[k].expression.obj_ids

    def _companions(self, index: int) -> list[int]:
        others = [i for i in self._group_of[index] if i != index]
        random.shuffle(others)
        # other objects first: a second sentence about the same object teaches less about grounding
        others.sort(key=lambda i: self._object(i) == self._object(index))
        return others[: self.sentences - 1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        for _ in range(MAX_REDRAWS):
            members = [index] + self._companions(index)
            seed = random.getrandbits(32)  # the same frames and augmentation for every member
            head_frames, targets = None, []
            for member in members:
                with isolated_rng(seed):
                    frames, target = self.dataset.load(member)
                if head_frames is None:
                    head_frames = frames
                elif not torch.equal(frames, head_frames):
                    raise RuntimeError(f"expressions {members[0]} and {member} of one video gave different clips")
                if bool(torch.any(target["valid"] == 1)):
                    targets.append(target)
            if targets:
                return head_frames, targets
            index = random.randrange(len(self.dataset))
        raise RuntimeError(f"{type(self).__name__}: no clip with a visible target after {MAX_REDRAWS} redraws")
