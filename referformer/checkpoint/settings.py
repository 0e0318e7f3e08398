"""How a model is run: the inference settings a model folder carries in its ``config.json``.

A checkpoint is only half of a model: the bundled ``synthetic-tiny`` was trained on 96 x 128 frames
in 5-frame clips and gives nonsense at the original's short side 360. Every entry point
(``Predictor``, ``segment``, ``evaluate``, ``demo``, ``segment_video``) therefore starts from the
settings stored with the weights and only changes what the user overrides.

``config.json`` holds them under ``"inference"``; a folder without that entry (older folders, the
official ``.pth`` files) gets the original code's settings (:data:`ORIGINAL_SETTINGS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from referformer.errors import UserError

# Query policies: which object query answers a sentence.
#   per_video  - the query with the highest mean score over all frames of the video (the original's
#                inference_ytvos.py, over its one clip), so one object for the whole video;
#   per_window - the highest mean score over the frames of each window, chosen again per window
#                (what a model trained on short clips, like synthetic-tiny, was measured with).
QUERY_POLICIES = ("per_video", "per_window")
# Frames per window when a video is streamed and the settings leave ``window`` open (the original
# inference_davis.py cuts videos into 36-frame clips).
STREAM_WINDOW = 36


@dataclass(frozen=True)
class InferenceSettings:
    """Settings of inference, stored with a model (``config.json`` ``"inference"``).

    Attributes:
        short_side: frames are resized (PIL bilinear) so their shorter side is this many pixels.
        max_size: cap on the longer side after resizing (None: no cap, as the original).
        window: frames per clip given to the model at once. None leaves it to the caller: a
            benchmark's own clip in ``evaluate`` (whole video for Ref-YouTube-VOS, 36 frames for
            DAVIS, as the original), :data:`STREAM_WINDOW` frames when ``segment`` streams a video.
        threshold: mask threshold on the sigmoid of the upsampled mask logits.
        query_policy: one of :data:`QUERY_POLICIES`.
        tokenizer: tokenizer to use (a folder relative to the model folder, an absolute folder, or a
            Hugging Face name in the offline cache); None: the text encoder config's.
    """

    short_side: int = 360
    max_size: int | None = None
    window: int | None = None
    threshold: float = 0.5
    query_policy: str = "per_video"
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name in ("short_side", "max_size", "window"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"inference setting {name} must be a positive integer, got {value!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise UserError(f"inference setting threshold must be in (0, 1), got {self.threshold!r}")
        if self.query_policy not in QUERY_POLICIES:
            raise UserError(f"inference setting query_policy must be one of {', '.join(QUERY_POLICIES)}, "
                            f"got {self.query_policy!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (every field)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InferenceSettings:
        """Settings from a ``config.json`` entry; missing fields take the original's values,
        unknown ones are refused (a typo should not be silently ignored)."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown inference setting(s) {', '.join(unknown)} in config.json; "
                            f"known: {', '.join(sorted(known))}")
        return cls(**data)

    def override(self, **changes: Any) -> InferenceSettings:
        """A copy with the given fields changed; ``None`` values mean "keep" (a flag not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def stream_window(self) -> int:
        """Frames per window when streaming a video: ``window`` or :data:`STREAM_WINDOW`."""
        return self.window if self.window is not None else STREAM_WINDOW


ORIGINAL_SETTINGS = InferenceSettings()
