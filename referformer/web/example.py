"""The page's "generate a synthetic example": one fresh video of the synthetic benchmark
(docs/synthetic.md), written as an H.264 MP4, with some of its referring expressions.

The video is generated as ``referformer demo`` does (split ``demo``, never used for training), so
the bundled ``synthetic-tiny`` model has not seen it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from referformer.inference.visualize import OverlayVideoWriter
from referformer.synthetic.scenes import SceneConfig, render_frame
from referformer.synthetic.writer import make_video

EXAMPLE_SPLIT = "demo"  # as `referformer demo`: a split name no model is trained on
EXAMPLE_FPS = 6.0  # frame names step by 5, as Ref-YouTube-VOS's 30 fps videos sampled every 5th frame
PickFn = Callable[[Any, int], Sequence[Any]]  # (expressions, count) -> chosen expressions


@dataclass(frozen=True)
class SyntheticExample:
    """``video``: the MP4 written; ``sentences``: its chosen expressions; ``seed``: the video's seed."""

    video: Path
    sentences: list[str]
    seed: int


def write_synthetic_example(folder: Path, pick: PickFn, *, seed: int | None = None, count: int = 3,
                            config: SceneConfig | None = None) -> SyntheticExample:
    """Generate the video of ``seed`` (default: a new random one) into ``folder/synthetic-<seed>.mp4``;
    ``pick(expressions, count)`` chooses the sentences (``referformer.commands.demo.pick_expressions``)."""
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    config = config or SceneConfig()
    video = make_video(seed, EXAMPLE_SPLIT, 0, config)
    path = Path(folder) / f"synthetic-{seed}.mp4"
    with OverlayVideoWriter(path, config.width, config.height, EXAMPLE_FPS) as writer:
        for t in range(len(video.frame_names)):
            writer.write(render_frame(video.scene, t)[0])
    sentences = [e.text for e in pick(video.expressions, count)]
    return SyntheticExample(path, sentences, seed)
