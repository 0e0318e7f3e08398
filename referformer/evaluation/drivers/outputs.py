"""Result files of the benchmarks: mask PNGs, palette PNGs and submission zips.

* Ref-YouTube-VOS / MeViS PNG: single-channel 8-bit 'L', original frame size, 0 background, 255
  object (``Image.fromarray(mask * 255).convert("L")``, DATASETS.md section 1, MEVIS.md section 7).
* Ref-DAVIS17 PNG: palette 'P' label map, value k = k-th object (``inference_davis.py``).
* Zips are written through a temporary file and renamed, entries in the given order.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from referformer.palette import VOC_PALETTE

__all__ = ["read_palette", "save_binary_png", "save_palette_png", "write_zip"]


def save_binary_png(mask: np.ndarray, path: Path) -> None:
    """Write a bool ``[H, W]`` mask as a 0/255 'L' PNG."""
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).convert("L").save(path)


def save_palette_png(labels: np.ndarray, path: Path, palette: list[int]) -> None:
    """Write a uint8 ``[H, W]`` label map as a palette ('P') PNG with ``palette`` (768 ints)."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(palette)
    image.save(path)


def read_palette(candidates: Iterable[Path]) -> list[int]:
    """The palette of the first readable palette PNG among ``candidates``; else the VOC palette
    (which DAVIS uses)."""
    for path in candidates:
        if path.is_file():
            with Image.open(path) as image:
                palette = image.getpalette()
                if image.mode == "P" and palette:
                    return list(palette)
    return list(VOC_PALETTE)


def write_zip(path: Path, entries: Iterable[tuple[Path, str]]) -> int:
    """Write ``(file, arcname)`` entries to the zip ``path`` atomically; returns the entry count.

    PNGs are already compressed, so entries are stored (``ZIP_STORED``) for speed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    count = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for file, arcname in entries:
                archive.write(file, arcname)
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
