"""A video cut short (a crash while writing, a partial download) is reported incomplete, not complete."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from referformer.inference.video_io import IncompleteInputWarning, open_source

WIDTH, HEIGHT, FPS, NUM_FRAMES, GOP = 64, 48, 10, 60, 20


def write_fragmented_mp4(path: Path) -> Path:
    """An H.264 fragmented MP4 (``frag_keyframe+empty_moov``): one fragment per GOP of 20 frames."""
    with av.open(str(path), mode="w", options={"movflags": "frag_keyframe+empty_moov"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        rng = np.random.default_rng(0)
        for _ in range(NUM_FRAMES):  # noise: every frame is large, so a cut loses whole frames
            image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def test_whole_fragmented_mp4_is_complete(tmp_path: Path) -> None:
    source = open_source(write_fragmented_mp4(tmp_path / "clip.mp4"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteInputWarning)
        assert len(list(source)) == NUM_FRAMES
    assert source.complete and source.incomplete_reason is None
    assert source.last_decode is not None and source.last_decode.reached_end


def test_truncated_fragmented_mp4_is_incomplete_with_a_warning(tmp_path: Path) -> None:
    cut = truncate(write_fragmented_mp4(tmp_path / "clip.mp4"), 0.5)  # in the middle of fragment 2
    source = open_source(cut)
    with pytest.warns(IncompleteInputWarning, match="cut_clip.mp4.*truncated"):
        frames = list(source)
    assert 0 < len(frames) < NUM_FRAMES
    assert not source.complete
    assert "frames" in source.incomplete_reason and "\n" not in source.incomplete_reason
    # windows (with the background decoder) report it the same way
    source = open_source(cut)
    with pytest.warns(IncompleteInputWarning):
        assert sum(len(w) for w in source.windows(8, prefetch=True)) == len(frames)
    assert not source.complete


def test_a_pass_stopped_early_is_not_called_incomplete(tmp_path: Path) -> None:
    cut = truncate(write_fragmented_mp4(tmp_path / "clip.mp4"), 0.5)
    source = open_source(cut, max_frames=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteInputWarning)
        assert len(list(source)) == 3
    assert source.complete


def test_a_decoding_error_part_way_ends_the_stream_incomplete(tmp_path: Path, monkeypatch) -> None:
    """FFmpeg failing after some frames (a corrupt packet) keeps those frames and reports it."""
    from referformer.inference import decoders

    source = open_source(write_fragmented_mp4(tmp_path / "clip.mp4"))
    real_decode = decoders._decode

    def failing_decode(container, path):
        for count, frame in enumerate(real_decode(container, path)):
            if count == 5:
                raise decoders.DecodeError(path, count, "Invalid data found when processing input")
            yield frame

    monkeypatch.setattr(decoders, "_decode", failing_decode)
    with pytest.warns(IncompleteInputWarning, match="decoding failed after 5 frames"):
        assert [f.index for f in source] == [0, 1, 2, 3, 4]
    assert not source.complete and "Invalid data" in source.incomplete_reason


class _NothingFound:
    """A stand-in predictor stream: every sentence finds nothing, query 0."""

    def __init__(self, sentences):
        self.sentences = sentences

    def process(self, window):
        from referformer.inference.results import SentenceWindowResult

        masks = np.zeros(window.images.shape[:3], bool)
        t = len(window)
        return [SentenceWindowResult(0, 0.1, masks, np.zeros((t, 4)), np.full(t, 0.1)) for _ in self.sentences]

    def finish(self):
        import types

        return [types.SimpleNamespace(query=0, score=0.1) for _ in self.sentences]

    def corrections(self):
        return iter(())

    def close(self):
        pass


def test_segment_to_folder_marks_a_truncated_input_incomplete(tmp_path: Path) -> None:
    import json
    import types

    from referformer.commands.segment import segment_to_folder

    cut = truncate(write_fragmented_mp4(tmp_path / "clip.mp4"), 0.5)
    predictor = types.SimpleNamespace(stream=lambda sentences, spill_dir=None: _NothingFound(sentences))
    with pytest.warns(IncompleteInputWarning):
        summary = segment_to_folder(predictor, open_source(cut), ["x"], tmp_path / "out", window=8,
                                    save_overlay=False, progress=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["complete"] is False and results["complete"] is False
    assert "frames" in results["warnings"][0]
