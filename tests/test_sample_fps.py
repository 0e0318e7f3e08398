"""``--fps`` and other frame rates entering the I/O layer: a bad one is a one-line error, never NaN."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from referformer import cli
from referformer.errors import UserError
from referformer.inference.frames import FrameSampler, check_frame_rate
from referformer.inference.video_io import open_source
from referformer.inference.writers import SegmentationWriter

BAD_RATES = [math.inf, -math.inf, math.nan, 0.0, -5.0]


def write_video(path: Path, num_frames: int = 6, fps: int = 10) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(num_frames):
            image = np.full((24, 32, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("fps", BAD_RATES)
def test_open_source_refuses_non_finite_and_non_positive_fps(tmp_path: Path, fps: float) -> None:
    path = write_video(tmp_path / "clip.mp4")
    with pytest.raises(UserError, match=r"^--fps must be a positive, finite number of frames per second, got ") as err:
        open_source(path, fps=fps)
    assert "\n" not in str(err.value)


def test_check_frame_rate_names_the_option() -> None:
    assert check_frame_rate(29.97) == pytest.approx(29.97)
    with pytest.raises(UserError, match="--rate .* got inf"):
        check_frame_rate(math.inf, "--rate")
    with pytest.raises(UserError, match="--fps must be a number"):
        check_frame_rate("fast")  # type: ignore[arg-type]


def test_huge_finite_fps_keeps_every_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4")
    assert [f.index for f in open_source(path, fps=1e308)] == list(range(6))
    sampler = FrameSampler(1, 1e308, None)
    assert sampler.keep(0, 0.0) and sampler.keep(1, 1e6)  # time * fps would overflow to inf


@pytest.mark.parametrize("fps", [math.inf, math.nan, -1.0])
def test_segmentation_writer_refuses_bad_overlay_rates(tmp_path: Path, fps: float) -> None:
    with pytest.raises(UserError, match="frame rate"):
        SegmentationWriter(tmp_path / "out", ["x"], width=8, height=6, fps=fps)
    assert not (tmp_path / "out" / "results.json").exists()


def test_segment_cli_fps_inf_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    """``referformer segment --fps inf``: refused before any output exists (was a traceback and a
    results.json holding ``Infinity``)."""
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"stand-in")
    video, out = write_video(tmp_path / "clip.mp4"), tmp_path / "out"
    for fps in ("inf", "nan", "0", "-2"):
        argv = ["segment", str(video), "-t", "x", "--checkpoint", str(checkpoint), "--out", str(out), "--fps", fps]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("referformer segment: error: --fps must be a positive, finite number")
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists()


def test_results_json_of_an_inf_rate_is_valid_json(tmp_path: Path) -> None:
    """Metadata with non-finite numbers (from a caller, a strange container) is written as null."""
    with SegmentationWriter(tmp_path / "out", ["x"], width=8, height=6, fps=None, save_overlay=False,
                            metadata={"sample_fps": math.inf, "source_fps": math.nan}) as writer:
        writer.write_window(["a"], None, [_empty_result()])
    text = (tmp_path / "out" / "results.json").read_text()
    results = json.loads(text, parse_constant=_refuse)
    assert results["sample_fps"] is None and results["source_fps"] is None


def _refuse(name: str) -> None:
    raise AssertionError(f"results.json holds {name}, which is not JSON")


def _empty_result():
    from referformer.inference.results import SentenceWindowResult

    return SentenceWindowResult(0, 0.5, np.zeros((1, 6, 8), bool), np.zeros((1, 4)), np.zeros(1))
