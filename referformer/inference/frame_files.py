"""Listing the frame images of a folder: which files count as frames, and in which order.

The one frame-file listing of the package: ``referformer segment`` (:func:`video_io.open_source` on
a folder), :class:`~referformer.inference.predictor.Predictor` and ``segment_video`` (through
:func:`preprocess.load_frames`) all read a folder with :func:`list_frame_files`, so a folder that
opens in one opens in all.

Frame files are the visible regular files whose suffix, in any case, is in :data:`IMAGE_SUFFIXES`:
``.bmp .jpeg .jpg .png .tif .tiff .webp`` (the formats Pillow reads without plugins and that hold
video frames; GIFs are animations and are read as videos, not as folder frames). Hidden files
(``.name``, e.g. macOS ``._00001.jpg`` resource forks), sub-folders and other files are skipped.
The order is natural: digit runs compare by value (``frame2`` before ``frame10``), letters
case-insensitively; for zero-padded names such as Ref-YouTube-VOS's ``00005.jpg`` this is plain
name order.
"""

from __future__ import annotations

import re
from pathlib import Path

from referformer.errors import UserError

# The union of the suffix sets the folder readers used to have (segment: with .tif/.tiff; the
# Python API: without). Compared lower-case.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def natural_sort_key(name: str) -> tuple:
    """Sort key ordering digit runs by value: ``frame2`` < ``frame10``; case-insensitive."""
    parts = re.split(r"(\d+)", name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)
    return key, name  # the exact name breaks ties ("img02" vs "img2", "A" vs "a")


def is_frame_file(path: Path) -> bool:
    """Whether ``path`` is listed as a frame: a visible regular file with an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def list_frame_files(folder: str | Path) -> list[Path]:
    """The frame images of ``folder`` in natural order (see the module docstring).

    Raises :class:`UserError` when ``folder`` is not a folder, cannot be read, or holds no frame.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"frame folder {folder} not found")
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise UserError(f"cannot read {folder}: {error.strerror or type(error).__name__}") from None
    files = [p for p in entries if is_frame_file(p)]
    if not files:
        raise UserError(
            f"folder {folder} contains no frame images "
            f"(expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(files, key=lambda p: natural_sort_key(p.name))
