"""Caption handling of the datasets: the left/right swap applied with horizontal flips.

Captions are cleaned by :func:`referformer.text.normalize_sentence` (lower case, collapsed
whitespace), the one implementation the datasets and inference share; ``clean_caption`` is that
function under the datasets' name.
"""

from __future__ import annotations

import re

from referformer.text import normalize_sentence as clean_caption

__all__ = ["clean_caption", "swap_left_right"]

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def swap_left_right(caption: str, whole_words: bool = True) -> str:
    """Swap the words "left" and "right" in a caption (used when a clip is mirrored).

    ``whole_words=True`` (our default, a deliberate fix) swaps only whole words:
    ``"the bright car on the left"`` -> ``"the bright car on the right"``; "leftmost" and
    "rightward" are left alone.
    ``whole_words=False`` reproduces the original exactly: a plain substring swap
    ``caption.replace("left", "@").replace("right", "left").replace("@", "right")``, which turns
    "bright" into "bleft" and any "@" already present into "right".
    """
    if not whole_words:
        return caption.replace("left", "@").replace("right", "left").replace("@", "right")
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", caption)
