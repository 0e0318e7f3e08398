"""The overlay stays readable: a legend in a real font size, wrapped to the frame, and sentences
that share an object each keep their colour on it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from referformer.inference.visualize import (
    PALETTE,
    OverlayRenderer,
    OverlayVideoWriter,
    _font,
    draw_overlay,
    legend_font_size,
    render_legend,
    wrap_label,
)

H, W = 96, 128  # the demo's frame size: the legend goes in a band below the frame
GREY = 100


def blended(colour: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    return (1 - alpha) * GREY + alpha * np.array(colour, float)


def fraction_near(pixels: np.ndarray, colour: np.ndarray, tol: float) -> float:
    """Fraction of ``pixels`` ``[N, 3]`` within ``tol`` of ``colour`` on every channel."""
    return float((np.abs(pixels.astype(float) - colour).max(axis=-1) <= tol).mean())


def shared_object() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((H, W), bool)
    mask[30:80, 40:100] = True
    return np.full((H, W, 3), GREY, np.uint8), mask


def test_two_sentences_on_one_object_both_show() -> None:
    image, mask = shared_object()
    colours = [PALETTE[0], PALETTE[1]]
    out = draw_overlay(image, [mask, mask], [None, None], colours)
    inside = out[mask]
    first, second = fraction_near(inside, blended(colours[0]), 1), fraction_near(inside, blended(colours[1]), 1)
    assert first > 0.35 and second > 0.35 and first + second > 0.99  # stripes, no third (mixed) colour
    assert out[10, 10].tolist() == [GREY] * 3  # outside the object: untouched


def test_partial_overlap_keeps_each_colour_outside_the_overlap() -> None:
    image = np.full((H, W, 3), GREY, np.uint8)
    left, right = np.zeros((H, W), bool), np.zeros((H, W), bool)
    left[20:70, 10:70] = True
    right[20:70, 50:120] = True
    out = draw_overlay(image, [left, right], [None, None], PALETTE[:2])
    assert fraction_near(out[left & ~right], blended(PALETTE[0]), 1) == 1.0
    assert fraction_near(out[right & ~left], blended(PALETTE[1]), 1) == 1.0
    overlap = out[left & right]
    assert fraction_near(overlap, blended(PALETTE[0]), 1) > 0.3 and fraction_near(overlap, blended(PALETTE[1]), 1) > 0.3


def test_shared_object_survives_h264(tmp_path: Path) -> None:
    image, mask = shared_object()
    renderer = OverlayRenderer(["the man", "a man riding a bike"], W, H)
    path = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(path, *renderer.output_size, fps=5) as writer:
        writer.write(renderer.draw(image, [mask, mask], [None, None]))
    with av.open(str(path)) as container:
        (frame,) = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    inside = frame[:H][mask]
    assert fraction_near(inside, blended(PALETTE[0]), 30) > 0.2
    assert fraction_near(inside, blended(PALETTE[1]), 30) > 0.2


def test_legend_text_is_at_least_14_pixels() -> None:
    assert legend_font_size(96) == 14 and legend_font_size(360) == 15 and legend_font_size(2160) == 32
    legend = np.asarray(render_legend(["0: the dog"], PALETTE[:1], W, H, crop_to_frame=False))
    white_rows = np.flatnonzero((legend[..., :3] > 200).all(axis=-1).any(axis=1))
    assert white_rows.size and white_rows[-1] - white_rows[0] + 1 >= 10  # glyphs 10+ pixels tall


def test_long_sentences_wrap_to_the_frame_width_then_ellipsize() -> None:
    font = _font(legend_font_size(H))
    sentence = "0: a man riding a bike towards the camera"
    lines = wrap_label(sentence, font, 100)
    assert len(lines) >= 2 and " ".join(lines) == sentence  # every word kept, none cut
    assert all(font.getlength(line) <= 100 for line in lines)
    lines = wrap_label("0: " + "a very long sentence " * 20, font, 100, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith("…") and all(font.getlength(line) <= 100 for line in lines)
    assert wrap_label("x" * 200, font, 100)[0].startswith("xxx")  # a word longer than a line is cut
    # the band under a small frame holds the wrapped lines: taller than one line per sentence
    short = OverlayRenderer(["the dog"], W, H)
    long = OverlayRenderer(["a man riding a bike towards the camera"], W, H)
    assert long.legend_below and long.output_size[1] > short.output_size[1]
    assert long.output_size[0] == W
