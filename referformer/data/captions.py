"""Sentence normalisation and the left/right swap applied with horizontal flips."""

from __future__ import annotations

import re

__all__ = ["clean_caption", "swap_left_right"]

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def clean_caption(text: str) -> str:
    """Lower-case and collapse whitespace: ``" ".join(text.lower().split())``.

    This is what the original does to Ref-YouTube-VOS, Ref-DAVIS, A2D, JHMDB and MeViS sentences
    (RefCOCO sentences are used as stored, already lower-case and tokenised).
    """
    return " ".join(text.lower().split())


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
