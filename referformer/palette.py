"""The 256-colour PASCAL VOC palette of DAVIS / YouTube-VOS annotation PNGs (pixel value = object id).

One home for it: the synthetic generator writes its annotations with it and the DAVIS writer falls
back to it when no ground-truth PNG gives a palette. (The overlay colours of
:mod:`referformer.inference.visualize` are a different, 10-colour palette.)
"""

from __future__ import annotations

__all__ = ["VOC_PALETTE", "voc_palette"]


def voc_palette() -> list[int]:
    """The VOC palette as 768 ints ``[r0, g0, b0, r1, ...]`` (``PIL.Image.putpalette`` order)."""
    flat = []
    for idx in range(256):
        r = g = b = 0
        code = idx
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        flat.extend((r, g, b))
    return flat


VOC_PALETTE: tuple[int, ...] = tuple(voc_palette())
""":func:`voc_palette`, computed once (a tuple: a shared constant nobody can change by accident)."""
