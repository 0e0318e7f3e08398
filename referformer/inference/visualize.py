"""Overlay video of ``referformer segment``: masks, boxes and a legend, encoded to H.264 with PyAV.

Every sentence gets a colour from :data:`PALETTE` (sentence ``i`` uses ``PALETTE[i % 10]``). Its
mask is blended into the frame (``(1 - alpha) * pixel + alpha * colour``, ``alpha = 0.5`` by
default) and its box drawn as an outline of the same colour. Where the masks of several sentences
overlap (two sentences about the same object), the overlap is painted in diagonal stripes that
alternate their colours, each blended the same way, so every sentence stays visible instead of
the colours mixing into one.

A legend lists the sentences (``i: sentence``) with their colours, in a font that scales with the
frame (1/24 of its height, 14 to 32 pixels); a sentence wider than the frame wraps over up to
three lines, the third ellipsized. It sits in the top-left corner of the frame, or, where it
would cover more than :data:`MAX_LEGEND_COVER` of a small frame, in a dark band added below the
frame (the overlay video is then taller than the input; see :attr:`OverlayRenderer.output_size`).
Drawing is numpy for the blending and Pillow for boxes and text; nothing here depends on the model.

:class:`OverlayVideoWriter` writes an MP4 (H.264, ``yuv420p``) frame by frame. The file is a
fragmented MP4 flushed after every frame (``movflags=frag_every_frame+empty_moov``, x264
``tune=zerolatency`` so no frame waits in the encoder): if the process dies, every frame but the
last one written stays playable. ``yuv420p`` needs even dimensions, so a frame of odd width or
height is padded with one black column/row on the right/bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from referformer.errors import UserError

# Distinct colours (Sasha Trubetskoy's "20 simple distinct colours", the first ten), RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (0, 130, 200),  # blue
    (255, 225, 25),  # yellow
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (250, 190, 212),  # pink
)
DEFAULT_ALPHA = 0.5
# Legend text: font size in pixels (scaled with the frame height, see legend_font_size) and the
# most lines one sentence may take before it is ellipsized.
MIN_LEGEND_FONT, MAX_LEGEND_FONT = 14, 32
MAX_LEGEND_LINES = 3
# Largest fraction of the frame's area the legend may cover; a larger legend goes in a band below.
MAX_LEGEND_COVER = 0.15


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def sentence_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of sentence ``index`` (0-based) in overlays."""
    return PALETTE[index % len(PALETTE)]


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(font: Font, text: str) -> float:
    return float(font.getlength(text))


def _line_height(font: Font, font_size: int) -> int:
    try:
        ascent, descent = font.getmetrics()
        return int(ascent + descent)
    except AttributeError:  # the bitmap fallback font
        return font_size + 3


def _fit(text: str, font: Font, width: float) -> str:
    """``text``, cut with an ellipsis so that it is at most ``width`` pixels wide."""
    if _text_width(font, text) <= width:
        return text
    low, high = 0, len(text)  # longest prefix that fits with the ellipsis, by bisection
    while low < high:
        mid = (low + high + 1) // 2
        if _text_width(font, text[:mid] + "…") <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + "…"


def legend_font_size(frame_height: int) -> int:
    """Legend font size in pixels: 1/24 of the frame height, at least 14 (readable in a small
    video once encoded), at most 32."""
    return int(np.clip(round(frame_height / 24), MIN_LEGEND_FONT, MAX_LEGEND_FONT))


def wrap_label(text: str, font: Font, width: float, max_lines: int = MAX_LEGEND_LINES) -> list[str]:
    """Break ``text`` into lines at most ``width`` pixels wide, at spaces (a word wider than a
    line is broken where it must); past ``max_lines`` lines the last one ends with an ellipsis."""
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        if len(lines) == max_lines - 1:  # the last line allowed takes the rest, ellipsized
            lines.append(_fit(" ".join(words), font, width))
            break
        line = words.pop(0)
        if _text_width(font, line) > width:  # one long word: cut it where the line is full
            cut = max(1, len(_fit(line, font, width)) - 1)
            line, rest = line[:cut], line[cut:]
            words.insert(0, rest)
        while words and _text_width(font, f"{line} {words[0]}") <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    return lines or [""]


def render_legend(
    labels: Sequence[str], colours: Sequence[tuple[int, int, int]], frame_width: int, frame_height: int,
    *, crop_to_frame: bool = True, max_lines: int = MAX_LEGEND_LINES,
) -> Image.Image:
    """Render the legend once, as an RGBA image to paste in the top-left corner of each frame.

    One entry per label: a swatch of the colour and the text, on a translucent dark background.
    Font size: :func:`legend_font_size` of the frame height. A label wider than the frame is
    wrapped over up to ``max_lines`` lines (:func:`wrap_label`), the last one ellipsized; the
    legend is at most ``frame_width`` pixels wide. Rows that do not fit in the frame's height are
    cut unless ``crop_to_frame=False``.
    """
    font_size = legend_font_size(frame_height)
    font = _font(font_size)
    pad = max(3, font_size // 4)
    line_height = _line_height(font, font_size)
    swatch = font_size
    text_left = pad + swatch + pad
    max_text_width = max(1, frame_width - text_left - pad)
    entries = [wrap_label(label, font, max_text_width, max_lines) for label in labels]
    text_width = max((_text_width(font, line) for lines in entries for line in lines), default=0)
    width = int(min(frame_width, text_left + text_width + pad + 1))
    height = int(pad + sum(len(lines) * line_height + pad for lines in entries))
    height = min(frame_height, height) if crop_to_frame else height
    legend = Image.new("RGBA", (max(width, 1), max(height, 1)), (0, 0, 0, 150))
    draw = ImageDraw.Draw(legend)
    top = pad
    for lines, colour in zip(entries, colours):
        swatch_top = top + max(0, (line_height - swatch) // 2)
        draw.rectangle([pad, swatch_top, pad + swatch - 1, swatch_top + swatch - 1], fill=(*colour, 255))
        for row, line in enumerate(lines):
            draw.text((text_left, top + row * line_height), line, fill=(255, 255, 255, 255), font=font)
        top += len(lines) * line_height + pad
    return legend


def stripe_width(height: int, width: int) -> int:
    """Width in pixels of the diagonal stripes where masks overlap: 1/40 of the smaller side, at
    least 6 (H.264's half-resolution colour planes would blur narrower stripes into one colour)."""
    return max(6, round(min(height, width) / 40))


def mask_owners(masks: Sequence[np.ndarray], box: tuple[slice, slice], stripe: int) -> np.ndarray:
    """Which sentence colours each pixel of the crop ``box``: int ``[h, w]``, ``-1`` outside every mask.

    A pixel in one mask gets that mask's index. A pixel in ``n > 1`` masks lies on diagonal stripes
    ``stripe`` pixels wide (in frame coordinates) that cycle through those masks, so sentences that
    share an object each keep their colour on it.
    """
    rows, cols = box
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    owner = np.full(shape, -1, np.int16)
    count = np.zeros(shape, np.uint8)
    for index, mask in enumerate(masks):
        crop = mask[box]
        owner[crop] = index
        count += crop
    shared = count > 1
    if shared.any():
        y, x = np.ogrid[rows.start : rows.stop, cols.start : cols.stop]
        turn = ((x + y) // stripe) % np.maximum(count, 1)  # which of the masks, in order, owns it
        seen = np.zeros(shape, np.uint8)  # masks of the pixel met so far
        for index, mask in enumerate(masks):
            crop = mask[box]
            owner[crop & shared & (seen == turn)] = index
            seen += crop
    return owner


def draw_overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    boxes_xyxy: Sequence[Sequence[float] | None],
    colours: Sequence[tuple[int, int, int]],
    *,
    legend: Image.Image | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """Draw masks, boxes and a legend on one frame.

    Each mask is blended in its colour (``(1 - alpha) * pixel + alpha * colour``); where masks
    overlap, diagonal stripes alternate their colours (:func:`mask_owners`) instead of mixing them.

    Args:
        image: RGB ``uint8`` ``[H, W, 3]``; not modified.
        masks: one boolean ``[H, W]`` mask per sentence.
        boxes_xyxy: one box per sentence in pixels ``(x0, y0, x1, y1)``, or ``None``; a box is
            drawn only when its mask is not empty (an empty mask means "not found").
        colours: one RGB colour per sentence.
        legend: the image from :func:`render_legend`, pasted top-left (optional).
        alpha: opacity of the mask colour.

    Returns:
        RGB ``uint8`` ``[H, W, 3]``.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = image.shape[:2]
    masks = [np.asarray(mask, dtype=bool) for mask in masks]
    present = [i for i, mask in enumerate(masks) if mask.any()]
    if present:
        union = np.logical_or.reduce([masks[i] for i in present])
        rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
        # blend inside the masks' bounding box only (boolean indexing of [H, W, 3] is slow)
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        owner = mask_owners([masks[i] for i in present], box, stripe_width(height, width))
        weight = round(alpha * 256)  # fixed point: (pixel * (256 - w) + colour * w + 128) >> 8
        tints = np.asarray([colours[i] for i in present], np.uint16) * weight + 128  # [n, 3]
        crop = out[box]
        tint = tints[np.maximum(owner, 0)]  # [h, w, 3]
        blended = ((crop.astype(np.uint16) * (256 - weight) + tint) >> 8).astype(np.uint8)
        np.copyto(crop, blended, where=(owner >= 0)[..., None])
    canvas = Image.fromarray(out)
    thickness = max(2, round(min(height, width) / 150))
    draw = ImageDraw.Draw(canvas)
    for mask, box_xyxy, colour in zip(masks, boxes_xyxy, colours):
        if box_xyxy is None or not mask.any():
            continue
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=thickness)
    if legend is not None:
        canvas.paste(legend, (0, 0), legend)
    return np.asarray(canvas)


def _even(n: int) -> int:
    return n + (n % 2)


class OverlayVideoWriter:
    """Writes RGB frames to an H.264 MP4 (``yuv420p``, even size), flushing after every frame.

    Args:
        path: output ``.mp4`` path.
        width, height: frame size in pixels; odd sizes are padded by one black pixel.
        fps: frame rate of the output (frames per second; not a positive finite number: 10).
        crf: x264 constant rate factor (lower is better quality; 18-23 is visually good).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, *, crf: int = 20):
        self.path = Path(path)
        self.width, self.height = width, height
        self.encoded_width, self.encoded_height = _even(width), _even(height)
        self.frames_written = 0
        # a rate that is not a positive finite number falls back to 10 fps (callers check theirs)
        rate = Fraction(fps).limit_denominator(1001) if math.isfinite(fps) and fps > 0 else Fraction(10)
        rate = max(rate, Fraction(1, 1001))  # a tiny rate must not round to 0
        self._container = av.open(
            str(self.path),
            mode="w",
            options={
                "movflags": "frag_every_frame+empty_moov+default_base_moof",
                "flush_packets": "1",
            },
        )
        try:
            self._stream = self._container.add_stream(_h264_encoder(), rate=rate)
        except BaseException:
            self._container.close()
            raise
        self._stream.width = self.encoded_width
        self._stream.height = self.encoded_height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.gop_size = max(1, round(2 * float(rate)))
        self._stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(crf)}
        self._closed = False

    def write(self, frames: np.ndarray) -> None:
        """Encode and mux RGB ``uint8`` frames ``[T, H, W, 3]`` (or one frame ``[H, W, 3]``)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [T, {self.height}, {self.width}, 3], "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        pad_h, pad_w = self.encoded_height - self.height, self.encoded_width - self.width
        for frame in frames:
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _h264_encoder() -> str:
    for name in ("libx264", "h264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):
            continue
    raise UserError(
        "this FFmpeg build (PyAV) has no H.264 encoder, so overlay.mp4 cannot be written "
        "(install a PyAV wheel from PyPI, or pass --no-overlay)"
    )


class OverlayRenderer:
    """Draws the overlay of a whole run: fixed sentences, colours and legend; frames stream in.

    Args:
        sentences: the sentences, in order; sentence ``i`` gets :func:`sentence_colour` ``(i)``.
        width, height: frame size in pixels.
        alpha: opacity of mask colours.
    """

    def __init__(self, sentences: Sequence[str], width: int, height: int, *, alpha: float = DEFAULT_ALPHA):
        self.colours = [sentence_colour(i) for i in range(len(sentences))]
        self.alpha = alpha
        labels = [f"{i}: {text}" for i, text in enumerate(sentences)]
        self.legend = render_legend(labels, self.colours, width, height)
        self.legend_below = self.legend.width * self.legend.height > MAX_LEGEND_COVER * width * height
        self.band: np.ndarray | None = None
        if self.legend_below:  # small frame: the legend would hide the masks, draw it under the frame
            legend = render_legend(labels, self.colours, width, height, crop_to_frame=False)
            band = Image.new("RGBA", (width, _even(legend.height)), (0, 0, 0, 255))
            band.paste(legend, (0, 0))
            self.band = np.asarray(band.convert("RGB"))
        self.output_size = (width, height + (0 if self.band is None else self.band.shape[0]))
        """(width, height) of the drawn frames: the input size, plus the legend band when there is one."""

    def draw(
        self, image: np.ndarray, masks: Sequence[np.ndarray], boxes_xyxy: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        """One frame: RGB ``uint8`` ``[H, W, 3]`` with every sentence's mask ``[H, W]`` and box ->
        ``[H', W, 3]`` (``output_size``; ``H' > H`` when the legend is in a band below the frame)."""
        if self.band is None:
            return draw_overlay(image, masks, boxes_xyxy, self.colours, legend=self.legend, alpha=self.alpha)
        return np.concatenate([draw_overlay(image, masks, boxes_xyxy, self.colours, alpha=self.alpha), self.band])
