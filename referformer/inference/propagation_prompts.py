"""Masks given to a propagator as palette PNGs (the DAVIS / YouTube-VOS annotation format).

A mask file is an 8-bit palette ('P') PNG at the frame size whose pixel values are object ids:
0 background, 1..254 objects, 255 void (ignored: neither background nor an object, as in DAVIS).
Its file stem names the frame it belongs to (``00010.png`` -> frame ``00010``; a video's frames are
named by their index, a folder's by their file stems). :func:`read_prompt_files` checks everything
before any work starts and raises one-line :class:`~referformer.errors.UserError` s naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from referformer.errors import UserError
from referformer.inference.propagation import FramePrompt
from referformer.palette import VOC_PALETTE

__all__ = ["VOID_ID", "prompts_from_label_maps", "read_mask_png", "read_prompt_files"]

VOID_ID = 255


def read_mask_png(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """A palette PNG -> (uint8 ``[H, W]`` label map, its palette as 768 ints)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask {path} not found")
    try:
        with Image.open(path) as image:
            image.load()
            mode, palette, labels = image.mode, image.getpalette(), np.array(image)
            kind = image.format
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"mask {path} is not a readable image ({err})") from None
    if kind != "PNG" or mode != "P":
        what = f"a {kind} image" if kind != "PNG" else f"a {mode!r} PNG"
        raise UserError(f"mask {path} is {what}, not a palette PNG: save it as an 8-bit palette ('P') PNG whose "
                        "pixel values are object ids (0 background), as DAVIS / YouTube-VOS annotations")
    return labels.astype(np.uint8), list(palette or VOC_PALETTE)


def _objects_of(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if 0 < v < VOID_ID]


def read_prompt_files(paths: Sequence[str | Path], size: tuple[int, int] | None = None,
                      objects: Sequence[int] | None = None) -> tuple[list[FramePrompt], list[int]]:
    """Read ``--mask`` files: returns the prompts (one per file, its stem naming the frame) and the
    palette of the first file (for the outputs).

    ``size``: ``(H, W)`` of the frames; a mask of another size is refused. ``objects``: track only
    these ids (default: every id found); each must be in some mask, and a file holding none of
    them is skipped. Refused, with one line naming the file: a missing or unreadable file, an image
    that is not a palette PNG, a mask with no object pixel, two masks for one frame.
    """
    if not paths:
        raise UserError("give at least one mask with --mask FRAME.png (a palette PNG named after its frame)")
    prompts, palette, seen = [], None, {}
    found: set[int] = set()
    for path in map(Path, paths):
        labels, file_palette = read_mask_png(path)
        palette = palette or file_palette
        if size is not None and labels.shape != tuple(size):
            raise UserError(f"mask {path} is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                            f"{size[1]}x{size[0]}: draw the mask at the frame size")
        ids = _objects_of(labels)
        if not ids:
            raise UserError(f"mask {path} is empty (no pixel with an object id 1..254): draw each object with its "
                            "id as the pixel value")
        if path.stem in seen:
            raise UserError(f"masks {seen[path.stem]} and {path} are for the same frame {path.stem!r}: "
                            "draw all of a frame's objects in one mask")
        seen[path.stem] = path
        found.update(ids)
        keep = ids if objects is None else [o for o in ids if o in set(objects)]
        if keep:
            prompts.append(FramePrompt(path.stem, {o: labels == o for o in keep}))
    for object_id in objects or ():
        if object_id not in found:
            raise UserError(f"object {object_id} is in none of the masks (they hold ids "
                            f"{', '.join(map(str, sorted(found)))}): check --objects")
    return prompts, list(palette or VOC_PALETTE)


def prompts_from_label_maps(label_maps: Mapping[str | int, np.ndarray],
                            objects: Sequence[int] | None = None) -> list[FramePrompt]:
    """Label maps ``{frame: uint8 [H, W]}`` (0 background, 255 void) -> prompts of every object id
    (or of ``objects`` only) present in each map."""
    prompts = []
    for frame, labels in label_maps.items():
        labels = np.asarray(labels)
        ids = [o for o in _objects_of(labels) if objects is None or o in set(objects)]
        if ids:
            prompts.append(FramePrompt(frame, {o: labels == o for o in ids}))
    return prompts
