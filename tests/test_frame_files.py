"""One frame-file listing for every reader of a folder (``segment``, ``Predictor``, ``segment_video``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referformer.errors import UserError
from referformer.inference import preprocess, video_io
from referformer.inference.frame_files import IMAGE_SUFFIXES, list_frame_files

COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]


def tif_folder(folder: Path) -> Path:
    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (20, 14), colour).save(folder / f"frame{i + 1}.tif")
    Image.new("RGB", (20, 14)).save(folder / "._frame1.tif")  # a macOS resource fork: not a frame
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_a_folder_of_tif_frames_opens_through_every_reader(tmp_path: Path) -> None:
    folder = tif_folder(tmp_path / "frames")
    # referformer segment / Predictor (video_io)
    frames = list(video_io.open_source(folder))
    assert [f.name for f in frames] == ["frame1", "frame2", "frame3"]
    assert [f.image[0, 0].tolist() for f in frames] == [list(c) for c in COLOURS]
    # segment_video / preprocess_frames (preprocess)
    images = preprocess.load_frames(folder)
    assert [np.asarray(im)[0, 0].tolist() for im in images] == [list(c) for c in COLOURS]
    clip, size = preprocess.preprocess_frames(folder, short_side=14)
    assert clip.shape == (3, 3, 14, 20) and size == (14, 20)


def test_one_function_and_one_suffix_set() -> None:
    assert preprocess.list_frame_files is list_frame_files
    assert preprocess.IMAGE_SUFFIXES is IMAGE_SUFFIXES is video_io.IMAGE_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"} == set(IMAGE_SUFFIXES)


def test_listing_order_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ["img10.PNG", "img2.jpg", "img1.tiff", ".hidden.png"]:
        Image.new("RGB", (4, 4)).save(folder / name)
    (folder / "sub.png").mkdir()  # a folder named like an image is not a frame
    assert [p.name for p in list_frame_files(folder)] == ["img1.tiff", "img2.jpg", "img10.PNG"]
    with pytest.raises(UserError, match="frame folder .* not found"):
        list_frame_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no frame images .*\\.tif"):
        preprocess.load_frames(tmp_path / "empty")
