"""Input decoding of ``referformer segment``: videos (PyAV), GIFs, frame folders, single images."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from referformer.errors import UserError
from referformer.inference.video_io import (
    FrameSource,
    iter_windows,
    natural_sort_key,
    open_source,
    prefetch_iter,
)

WIDTH, HEIGHT, FPS, NUM_FRAMES = 64, 48, 10, 12
CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx", ".avi": "mpeg4"}


def frame_colour(i: int) -> tuple[int, int, int]:
    """A distinct flat colour per frame, far from the codecs' rounding errors."""
    return (20 * i % 256, 255 - 20 * i % 256, 60 + 10 * i % 256)


def write_video(path: Path, num_frames: int = NUM_FRAMES, fps: int = FPS) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()  # writes the header even when no frame follows
        for i in range(num_frames):
            image = np.full((HEIGHT, WIDTH, 3), frame_colour(i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def assert_colour(image: np.ndarray, i: int, tol: int = 14) -> None:
    centre = image[HEIGHT // 2, WIDTH // 2].astype(int)
    assert np.abs(centre - np.array(frame_colour(i))).max() <= tol, (centre, frame_colour(i))


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_video_containers_decode_all_frames(tmp_path: Path, suffix: str) -> None:
    source = open_source(write_video(tmp_path / f"clip{suffix}"))
    assert source.info.kind == "video"
    assert (source.info.width, source.info.height) == (WIDTH, HEIGHT)
    assert source.info.fps == pytest.approx(FPS)
    frames = list(source)
    assert [f.name for f in frames] == [f"{i:05d}" for i in range(NUM_FRAMES)]
    assert [f.index for f in frames] == list(range(NUM_FRAMES))
    assert frames[3].time == pytest.approx(0.3)
    for frame in frames:
        assert frame.image.shape == (HEIGHT, WIDTH, 3) and frame.image.dtype == np.uint8
        assert_colour(frame.image, frame.index)


def test_video_sampling_stride_fps_max_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4")
    names = lambda src: [f.name for f in src]
    assert names(open_source(path, stride=3)) == ["00000", "00003", "00006", "00009"]
    assert names(open_source(path, fps=5)) == [f"{i:05d}" for i in range(0, NUM_FRAMES, 2)]
    assert names(open_source(path, fps=4)) == ["00000", "00003", "00005", "00008", "00010"]
    assert len(list(open_source(path, fps=100))) == NUM_FRAMES  # no duplicated frames
    assert names(open_source(path, stride=2, max_frames=3)) == ["00000", "00002", "00004"]
    source = open_source(path, fps=5)
    assert source.sampled_fps == pytest.approx(5)
    assert source.estimated_length() == 6
    assert open_source(path, stride=5).sampled_fps == pytest.approx(2)
    # the stream is re-iterable and decodes the same frames again
    assert names(source) == names(source)


def test_video_decoding_stops_at_max_frames(tmp_path: Path, monkeypatch) -> None:
    source = open_source(write_video(tmp_path / "clip.mkv", num_frames=30), max_frames=2)
    frames = iter(source)
    assert [next(frames).index, next(frames).index] == [0, 1]
    with pytest.raises(StopIteration):
        next(frames)


def test_windows_group_frames_and_keep_names(tmp_path: Path) -> None:
    source = open_source(write_video(tmp_path / "clip.webm"), stride=2)
    for prefetch in (False, True):
        windows = list(source.windows(4, prefetch=prefetch))
        assert [len(w) for w in windows] == [4, 2]
        assert [w.start for w in windows] == [0, 4]
        assert windows[1].names == ["00008", "00010"] and windows[1].indices == [8, 10]
        assert windows[0].images.shape == (4, HEIGHT, WIDTH, 3)
        assert_colour(windows[1].images[0], 8)


def test_gif_frames_times_and_fps(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (WIDTH, HEIGHT), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)] * 2]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
    source = open_source(path)
    assert source.info.kind == "gif" and source.info.num_frames == 6
    assert source.info.fps == pytest.approx(5)
    decoded = list(source)
    assert [f.name for f in decoded] == [f"{i:05d}" for i in range(6)]
    assert [f.time for f in decoded][:3] == pytest.approx([0.0, 0.2, 0.4])
    assert decoded[1].image[5, 5].tolist() == [0, 255, 0]
    assert decoded[5].image[5, 5].tolist() == [0, 0, 255]
    assert [f.index for f in open_source(path, fps=2.5)] == [0, 2, 4]
    assert [f.index for f in open_source(path, stride=4)] == [0, 4]


def make_folder(folder: Path, names: list[str], size=(WIDTH, HEIGHT)) -> Path:
    folder.mkdir()
    for i, name in enumerate(names):
        Image.new("RGB", size, frame_colour(i)).save(folder / name)
    return folder


def test_folder_natural_order_and_stems(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "frames", ["frame10.png", "frame2.jpg", "frame1.png", "Frame3.PNG"])
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")
    source = open_source(folder)
    assert source.info.kind == "folder" and source.info.fps is None
    assert source.info.num_frames == 4 and source.estimated_length() == 4
    frames = list(source)
    assert [f.name for f in frames] == ["frame1", "frame2", "Frame3", "frame10"]
    assert frames[0].image[0, 0].tolist() == list(frame_colour(2))  # frame1.png was written third
    assert [f.name for f in open_source(folder, stride=2, max_frames=1)] == ["frame1"]
    with pytest.raises(UserError, match="--stride"):
        open_source(folder, fps=5)


def test_natural_sort_key() -> None:
    names = ["img10.png", "img2.png", "img1.png", "img02b.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == ["a.png", "img1.png", "img2.png", "img02b.png", "img10.png"]


def test_single_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (33, 21), (10, 200, 30)).save(path)
    source = open_source(path)
    assert (source.info.kind, source.info.width, source.info.height) == ("image", 33, 21)
    (frame,) = list(source)
    assert frame.name == "photo" and frame.image.shape == (21, 33, 3)


def test_prefetch_propagates_errors_and_stops_early() -> None:
    def failing():
        yield 1
        raise ValueError("boom")

    out = prefetch_iter(failing())
    assert next(out) == 1
    with pytest.raises(ValueError, match="boom"):
        next(out)

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetch_iter(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # joins the thread, which closes the producer
    assert closed.is_set()


def test_iter_windows_rejects_bad_size() -> None:
    with pytest.raises(UserError):
        list(iter_windows([], 0))


# --- bad inputs: one-line UserError ------------------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="input not found"):
        open_source(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("hello, I am text\n" * 10)
    with pytest.raises(UserError, match="not a video"):
        open_source(path)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(UserError, match="no video stream"):
        open_source(path)


def test_video_with_zero_frames(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="the video has no frames"):
        open_source(write_video(tmp_path / "empty.avi", num_frames=0))
    # mp4 / mkv muxers drop a stream that never got a packet: still a one-line error
    for suffix in (".mp4", ".mkv"):
        with pytest.raises(UserError, match=f"empty{suffix}.*(no video stream|not a video)"):
            open_source(write_video(tmp_path / f"empty{suffix}", num_frames=0))


def test_bad_image_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        open_source(tmp_path / "broken.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no frame images"):
        open_source(tmp_path / "empty")
    folder = make_folder(tmp_path / "mixed", ["a.png"])
    Image.new("RGB", (10, 10)).save(folder / "b.png")
    with pytest.raises(UserError, match="same size"):
        open_source(folder)


def test_bad_sampling_options(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", num_frames=2)
    for kwargs in ({"stride": 0}, {"fps": 0}, {"max_frames": 0}, {"stride": 2, "fps": 5}):
        with pytest.raises(UserError):
            open_source(path, **kwargs)


def test_source_repr_is_informative(tmp_path: Path) -> None:
    source = open_source(write_video(tmp_path / "clip.avi", num_frames=2))
    assert isinstance(source, FrameSource) and "clip.avi" in repr(source)


def test_decoding_is_lazy_window_by_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking the first window decodes only that window (plus, with prefetch, the next one)."""
    from referformer.inference import decoders

    source = open_source(write_video(tmp_path / "long.mp4", num_frames=40))
    decoded = []
    real_decode = decoders._decode

    def counting_decode(container, path):
        for frame in real_decode(container, path):
            decoded.append(frame)
            yield frame

    monkeypatch.setattr(decoders, "_decode", counting_decode)
    windows = source.windows(4)
    next(windows)
    assert len(decoded) == 4
    windows.close()
    decoded.clear()
    windows = source.windows(4, prefetch=True)
    next(windows)
    threading.Event().wait(0.3)  # let the background thread run ahead as far as it may
    assert len(decoded) <= 4 + 4 + 4  # current window, one queued, one being assembled
    windows.close()
