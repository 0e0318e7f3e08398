"""Overlay drawing and the H.264 overlay writer."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from referformer.inference.visualize import (
    PALETTE,
    OverlayRenderer,
    OverlayVideoWriter,
    draw_overlay,
    render_legend,
    sentence_colour,
)

H, W = 120, 160
GREY = 100


def masks_and_boxes() -> tuple[list[np.ndarray], list[list[float]]]:
    first = np.zeros((H, W), bool)
    first[60:110, 20:70] = True
    second = np.zeros((H, W), bool)
    second[60:110, 100:150] = True
    return [first, second], [[20, 60, 69, 109], [100, 60, 149, 109]]


def blended(colour: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    return (1 - alpha) * GREY + alpha * np.array(colour, float)


def test_palette_colours_are_distinct() -> None:
    assert len(set(PALETTE)) == len(PALETTE) == 10
    assert sentence_colour(0) != sentence_colour(1) and sentence_colour(12) == PALETTE[2]


def test_draw_overlay_blends_colours_inside_masks_only() -> None:
    image = np.full((H, W, 3), GREY, np.uint8)
    masks, boxes = masks_and_boxes()
    colours = [sentence_colour(0), sentence_colour(1)]
    out = draw_overlay(image, masks, boxes, colours)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out[85, 45] - blended(colours[0])).max() <= 1
    assert np.abs(out[85, 125] - blended(colours[1])).max() <= 1
    assert out[30, 85].tolist() == [GREY] * 3  # outside every mask and box
    assert out[60, 45].tolist() == list(colours[0])  # the box outline, drawn in full colour
    assert np.array_equal(image, np.full((H, W, 3), GREY, np.uint8))  # input untouched


def test_empty_mask_draws_no_box_and_legend_is_top_left() -> None:
    image = np.full((H, W, 3), GREY, np.uint8)
    legend = render_legend(["0: a man riding a bike", "1: the dog"], PALETTE[:2], W, H)
    assert legend.mode == "RGBA" and legend.size[0] <= W and legend.size[1] < H // 2
    out = draw_overlay(image, [np.zeros((H, W), bool)], [[20, 60, 69, 109]], [PALETTE[0]], legend=legend)
    assert out[60, 45].tolist() == [GREY] * 3
    assert out[legend.size[1] - 1, 1].tolist() != [GREY] * 3  # legend background darkens
    assert out[H - 1, W - 1].tolist() == [GREY] * 3
    # the legend shows each colour as a swatch
    swatches = np.asarray(legend)[..., :3].reshape(-1, 3).tolist()
    assert list(PALETTE[0]) in swatches and list(PALETTE[1]) in swatches


def test_long_sentences_fit_the_frame() -> None:
    legend = render_legend(["x" * 500], PALETTE[:1], 100, 80)
    assert legend.size[0] <= 100


def test_legend_of_a_small_frame_goes_in_a_band_below() -> None:
    sentences = ["the red circle", "the square moving left", "the small star at the top"]
    image = np.full((96, 128, 3), GREY, np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[2:20, 2:20] = True  # in the corner the legend would cover
    small = OverlayRenderer(sentences, 128, 96)
    width, height = small.output_size
    assert small.legend_below and width == 128 and height > 96 and height % 2 == 0
    out = small.draw(image, [mask, mask, mask], [None] * 3)
    assert out.shape == (height, 128, 3)
    # the frame part is the overlay without a legend; the band shows the three swatches
    assert np.array_equal(out[:96], draw_overlay(image, [mask] * 3, [None] * 3, small.colours))
    band = out[96:].reshape(-1, 3).tolist()
    assert all(list(c) in band for c in PALETTE[:3])
    large = OverlayRenderer(sentences, 640, 360)  # the legend covers < 15% of the frame: top-left
    assert not large.legend_below and large.output_size == (640, 360)
    assert large.draw(np.full((360, 640, 3), GREY, np.uint8), [np.zeros((360, 640), bool)] * 3,
                      [None] * 3)[5, 5].tolist() != [GREY] * 3


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
        assert all(f.format.name == "yuv420p" for f in frames)
        return [f.to_ndarray(format="rgb24") for f in frames]


def test_overlay_video_colours_sit_where_masks_are(tmp_path: Path) -> None:
    renderer = OverlayRenderer(["a man riding a bike", "the dog"], W, H)
    masks, boxes = masks_and_boxes()
    image = np.full((H, W, 3), GREY, np.uint8)
    path = tmp_path / "overlay.mp4"
    with OverlayVideoWriter(path, *renderer.output_size, fps=5) as writer:
        for _ in range(4):
            writer.write(renderer.draw(image, masks, boxes))
    frames = decode(path)
    assert len(frames) == 4 and frames[0].shape == (renderer.output_size[1], W, 3)
    for frame in frames:
        assert np.abs(frame[85, 45].astype(float) - blended(PALETTE[0])).max() <= 12
        assert np.abs(frame[85, 125].astype(float) - blended(PALETTE[1])).max() <= 12
        assert np.abs(frame[100, 85].astype(float) - GREY).max() <= 6
    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(5)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with OverlayVideoWriter(path, 33, 21, fps=29.97) as writer:
        writer.write(np.full((3, 21, 33, 3), 200, np.uint8))
        with pytest.raises(ValueError, match="expected uint8 frames"):
            writer.write(np.zeros((1, 20, 33, 3), np.uint8))
    frames = decode(path)
    assert len(frames) == 3 and frames[0].shape == (22, 34, 3)
    assert np.abs(frames[0][10, 16].astype(int) - 200).max() <= 6
    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(29.97, abs=1e-3)


def test_overlay_survives_a_hard_crash(tmp_path: Path) -> None:
    """What is on disk while the writer is still open is what a killed process leaves behind."""
    path, snapshot = tmp_path / "live.mp4", tmp_path / "crash.mp4"
    writer = OverlayVideoWriter(path, 64, 48, fps=10)
    for i in range(12):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    shutil.copyfile(path, snapshot)  # the file as it is now, never closed
    writer.close()
    frames = decode(snapshot)
    assert len(frames) >= 11  # every frame but (at most) the last one written
    assert abs(int(frames[10][24, 32, 0]) - 200) <= 6
    assert len(decode(path)) == 12
