"""``referformer download`` / ``presets`` and the entry points by published name, with the network gone.

The bundled ``synthetic-tiny-v1`` model (the original architecture), saved in the official format, is
served from a loopback mirror under a test-registered name: downloading it and then segmenting by name
with the server stopped must give exactly what the bundled model gives.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from referformer.checkpoint import (bundled_model_dir, download, load_model, read_inference_settings,
                                    read_pretrained_config, save_official_checkpoint, zoo)
from referformer.cli import main
from weights_mirror import Mirror

NAME, DRIVE_ID = "test-synthetic", "test-synthetic-id"
OTHER, OTHER_ID = "test-synthetic-missing", "test-synthetic-missing-id"


@pytest.fixture(scope="module")
def synthetic_file() -> bytes:
    buffer = io.BytesIO()
    save_official_checkpoint(load_model("synthetic-tiny-v1"), buffer)
    return buffer.getvalue()


def _entry(name: str, drive_id: str) -> zoo.PublishedCheckpoint:
    folder = bundled_model_dir("synthetic-tiny-v1")
    config, _ = read_pretrained_config(folder)
    settings = read_inference_settings(folder).override(tokenizer=str(folder / "tokenizer"))
    return zoo.PublishedCheckpoint(name, drive_id, "tiny", "ResNet-18", "synthetic", {"Synthetic J&F": 90.5},
                                   settings, config=config)


@pytest.fixture
def mirror(tmp_path: Path, synthetic_file: bytes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REFERFORMER_HOME", str(tmp_path / "home"))
    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    monkeypatch.setattr(download, "RETRIES", 0)
    server = Mirror()
    server.files[DRIVE_ID] = synthetic_file
    monkeypatch.setenv("REFERFORMER_MIRROR", server.base_url)
    monkeypatch.setitem(zoo.PUBLISHED, NAME, _entry(NAME, DRIVE_ID))
    yield server
    server.stop()


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """10 frames, 96 x 128: a white square moving right on grey."""
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for t in range(10):
            image = np.full((96, 128, 3), 30, np.uint8)
            image[40:60, 10 + 4 * t:30 + 4 * t] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _segment(video: Path, checkpoint: str, out: Path) -> dict:
    code = main(["segment", str(video), "-t", "the white square", "--checkpoint", checkpoint, "--out", str(out),
                 "--device", "cpu", "--quiet", "--no-overlay"])
    assert code == 0
    return json.loads((out / "results.json").read_text())


def test_download_then_segment_by_name_with_the_network_gone(mirror, video, tmp_path, capsys) -> None:
    assert main(["download", NAME, "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "home" / "models" / NAME
    assert out.startswith(f"{NAME}: {folder} (") and "sha256 of the original" in out
    mirror.stop()
    ours = _segment(video, NAME, tmp_path / "by-name")
    bundled = _segment(video, "synthetic-tiny-v1", tmp_path / "bundled")
    assert [s["query"] for s in ours["sentences"]] == [s["query"] for s in bundled["sentences"]]
    assert ours["sentences"][0]["score"] == pytest.approx(bundled["sentences"][0]["score"], abs=1e-6)
    assert ours["sentences"][0]["frames"] == bundled["sentences"][0]["frames"]

    from referformer.inference.predictor import Predictor

    predictor = Predictor.from_pretrained(NAME, device="cpu")
    assert predictor.settings.short_side == 96 and predictor.settings.window == 5
    assert mirror.requests == [(DRIVE_ID, None, 200)]


def test_download_offline_only_checks_the_cache(mirror, capsys) -> None:
    assert main(["download", NAME, "--offline"]) == 2
    err = capsys.readouterr().err
    assert f"run `referformer download {NAME}`" in err and err.count("\n") == 1
    assert mirror.requests == []
    assert main(["download", NAME, "--quiet"]) == 0
    assert main(["download", NAME, "--offline"]) == 0
    assert len(mirror.requests) == 1


def test_download_all_goes_on_after_a_failure_and_names_it(mirror, monkeypatch, capsys, tmp_path) -> None:
    only = {NAME: zoo.PUBLISHED[NAME], OTHER: _entry(OTHER, OTHER_ID)}  # OTHER is not on the mirror
    monkeypatch.setattr(zoo, "PUBLISHED", only)
    assert main(["download", "--all", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert f"{NAME}: " in captured.out
    assert f"error: downloading {OTHER}" in captured.err and f"1 of 2 failed: {OTHER}" in captured.err
    assert (tmp_path / "home" / "models" / NAME / "manifest.json").is_file()
    assert not (tmp_path / "home" / "models" / OTHER).exists()


def test_download_file_installs_a_hand_downloaded_checkpoint(mirror, synthetic_file, tmp_path, monkeypatch,
                                                            capsys) -> None:
    mirror.stop()
    pth = tmp_path / "by-hand.pth"
    pth.write_bytes(synthetic_file)
    assert main(["download", NAME, "--file", str(pth), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "home" / "models" / NAME / "manifest.json").read_text())
    assert manifest["source"] == f"file://{pth.resolve()}" and manifest["size"] == len(synthetic_file)
    assert pth.is_file(), "a file given by the user is left in place"
    assert main(["download", NAME, OTHER, "--file", str(pth)]) == 2
    assert "exactly one NAME" in capsys.readouterr().err


def test_download_refuses_unknown_names_before_downloading(mirror, capsys) -> None:
    assert main(["download", NAME, "ytvos-r5O"]) == 2
    assert "no published checkpoint named 'ytvos-r5O'; did you mean ytvos-r50" in capsys.readouterr().err
    assert mirror.requests == []


def _published_lines(out: str) -> list[str]:
    """The lines of the "published checkpoints" section of ``referformer presets``."""
    section = out.split("\npublished checkpoints", 1)[1].split("\n\n", 1)[0]
    return section.splitlines()[1:]


def test_presets_shows_numbers_sizes_and_what_is_cached(mirror, capsys) -> None:
    assert main(["presets"]) == 0
    out = _published_lines(capsys.readouterr().out)
    line = next(line for line in out if line.strip().startswith("ytvos-r50 "))
    assert "ResNet-50" in line and "~705 MB" in line and "Ref-YouTube-VOS J&F 55.6; Ref-DAVIS17 J&F 58.5" in line
    assert " - " in line  # not cached
    joint = next(line for line in out if line.strip().startswith("ytvos-joint-swin-l "))
    assert "J&F 64.2, J 62.3, F 66.2" in joint and "~1,386 MB" in joint

    assert main(["download", NAME, "--quiet", "--no-tokenizer"]) == 0
    capsys.readouterr()
    assert main(["presets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    published = listing["published"]
    assert published["ytvos-r50"]["results"] == {"Ref-YouTube-VOS J&F": 55.6, "Ref-DAVIS17 J&F": 58.5}
    assert published["ytvos-r50"]["cached"] is False and published["ytvos-r50"]["size_estimated"] is True
    assert published["ytvos-r50"]["drive_id"] == "1TBykzTRiOEbpM2YEYnDICyqjwkvlD2cR"
    ours = published[NAME]
    assert ours["cached"] is True and ours["size_estimated"] is False
    assert ours["size"] == (Path(ours["folder"]) / "model.safetensors").stat().st_size
    assert main(["presets"]) == 0
    mine = next(line for line in _published_lines(capsys.readouterr().out) if line.strip().startswith(NAME + " "))
    assert "cached" in mine and "Synthetic J&F 90.5" in mine


def test_download_saves_a_hub_tokenizer_with_the_model(mirror, monkeypatch, tmp_path) -> None:
    """A model whose settings name a Hub tokenizer: `download` fetches it (huggingface_hub) into the
    model's folder, so the cached entry alone runs offline."""
    import huggingface_hub

    entry = _entry(NAME, DRIVE_ID)
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(
        NAME, DRIVE_ID, "tiny", "ResNet-18", "synthetic", inference=entry.inference.override(tokenizer="someone/tok"),
        config=entry.config))
    calls = []

    def fake_snapshot_download(repo_id, *, allow_patterns=None, local_files_only=False, **kwargs):
        calls.append((repo_id, local_files_only))
        return str(bundled_model_dir("synthetic-tiny-v1") / "tokenizer")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert main(["download", NAME, "--quiet"]) == 0
    assert calls == [("someone/tok", False)]
    saved = tmp_path / "home" / "models" / NAME / "tokenizer"
    assert (saved / "tokenizer.json").is_file() and not (saved / "tokenizer.json").is_symlink()

    mirror.stop()
    monkeypatch.setenv("REFERFORMER_OFFLINE", "1")
    from referformer.inference.predictor import Predictor

    predictor = Predictor.from_pretrained(NAME, device="cpu")
    assert len(predictor.tokenizer) == 525 and calls == [("someone/tok", False)]


def test_evaluate_by_published_name_after_download(mirror, tmp_path, capsys) -> None:
    from referformer.synthetic import SceneConfig, generate_dataset

    root = tmp_path / "synthetic"
    generate_dataset(root, 3, 1, splits=("valid",), config=SceneConfig(height=48, width=64, num_frames=4),
                     progress=False)
    assert main(["download", NAME, "--quiet"]) == 0
    mirror.stop()
    capsys.readouterr()
    assert main(["evaluate", "--dataset", "synthetic", "--root", str(root), "--checkpoint", NAME,
                 "--out", str(tmp_path / "eval"), "--json", "--device", "cpu", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(tmp_path / "home" / "models" / NAME) and 0.0 <= report["J&F"] <= 1.0
