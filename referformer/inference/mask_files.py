"""Masks on disk: COCO RLE strings for ``results.json`` and 0/255 PNG files per sentence folder.

``<i>_<slug>/<frame>.png``: sentence ``i`` (0-based) gets a folder named by :func:`sentence_dir_name`,
holding one single-channel ('L') PNG per frame, 0 outside the object and 255 inside, at the
original frame size. RLE: COCO compressed RLE (pycocotools) with ``counts`` as a ``str``.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# what a folder written by MaskPngWriter is called (prepare_output_dir removes only those)
MASK_DIR_PATTERN = re.compile(r"^\d+_[a-z0-9_]*$")


def encode_mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a boolean ``[H, W]`` mask: ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask_rle`: boolean ``[H, W]``."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    with warnings.catch_warnings():  # pycocotools' own numpy-2 DeprecationWarning, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def sentence_slug(text: str, max_length: int = 40) -> str:
    """A folder-safe ASCII version of a sentence: ``"The dog!"`` -> ``"the_dog"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    slug = slug[:max_length].rstrip("_")
    return slug or "sentence"


def sentence_dir_name(index: int, text: str) -> str:
    """Mask folder of sentence ``index`` (0-based): ``"<index>_<slug>"``."""
    return f"{index}_{sentence_slug(text)}"


class MaskPngWriter:
    """Writes ``out_dir/<i>_<slug>/<frame>.png``: 0/255 single-channel ('L') PNG masks."""

    def __init__(self, out_dir: Path, sentences: Sequence[str]):
        self.dirs = [Path(out_dir) / sentence_dir_name(i, text) for i, text in enumerate(sentences)]
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, sentence_index: int, names: Sequence[str], masks: np.ndarray) -> None:
        """Save boolean masks ``[T, H, W]`` of one sentence, one PNG per frame name."""
        for name, mask in zip(names, masks):
            pixels = np.asarray(mask, dtype=np.uint8) * np.uint8(255)
            # zlib level 1: binary masks compress almost as well, several times faster
            Image.fromarray(pixels).save(self.dirs[sentence_index] / f"{name}.png", compress_level=1)
