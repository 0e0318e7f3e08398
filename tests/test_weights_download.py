"""Published checkpoints by name: download (from a loopback mirror), verify, convert, cache, reuse.

A tiny model saved in the official format is served under a test-registered name through
``REFERFORMER_MIRROR``; the cache is a temporary ``REFERFORMER_HOME``. Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from referformer.checkpoint import InferenceSettings, load_model, resolve_checkpoint, save_official_checkpoint
from referformer.checkpoint import cache, download, zoo
from referformer.checkpoint.install import fetch_published
from referformer.cli import main
from referformer.errors import UserError
from referformer.models import build_model
from referformer.presets import tiny_config
from weights_mirror import Mirror

NAME = "test-tiny"
DRIVE_ID = "test-tiny-drive-id"
SETTINGS = InferenceSettings(short_side=64, window=4, query_policy="per_window")


def official_bytes(config) -> bytes:
    torch.manual_seed(0)
    model = build_model(config).eval()
    buffer = io.BytesIO()
    save_official_checkpoint(model, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_file() -> bytes:
    return official_bytes(tiny_config())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, downloads allowed, no wait between retries."""
    monkeypatch.setenv("REFERFORMER_HOME", str(tmp_path / "home"))
    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    return tmp_path / "home"


@pytest.fixture
def mirror(home: Path, tiny_file: bytes, monkeypatch: pytest.MonkeyPatch):
    server = Mirror()
    server.files[DRIVE_ID] = tiny_file
    monkeypatch.setenv("REFERFORMER_MIRROR", server.base_url + "/")
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(
        NAME, DRIVE_ID, "tiny", "ResNet-18", "synthetic", {"Test J&F": 12.5}, SETTINGS))
    yield server
    server.stop()


def assert_nothing_cached(home: Path) -> None:
    models = home / "models"
    assert not (models / NAME).exists()
    assert not list(models.glob(".staging-*"))
    assert not list((home / "downloads").glob("*.pth"))
    with pytest.MonkeyPatch.context() as patch, pytest.raises(UserError, match="not in the cache"):
        patch.setenv("REFERFORMER_OFFLINE", "1")  # offline, the name must not resolve to anything
        resolve_checkpoint(NAME)


def test_first_use_downloads_verifies_converts_and_caches(mirror: Mirror, home: Path, tiny_file: bytes) -> None:
    model = load_model(NAME)
    torch.manual_seed(0)
    expected = build_model(tiny_config()).eval()
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.inference_settings == SETTINGS

    folder = home / "models" / NAME
    assert model.checkpoint_path == folder
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "manifest.json", "model.safetensors"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(tiny_file).hexdigest()
    assert manifest["size"] == len(tiny_file)
    assert manifest["source"] == f"{mirror.base_url}/{DRIVE_ID}"
    assert manifest["weights"]["size"] == (folder / "model.safetensors").stat().st_size
    config = json.loads((folder / "config.json").read_text())
    assert config["inference"] == SETTINGS.to_dict()
    assert config["metadata"]["official_results"] == {"Test J&F": 12.5}
    assert "Test J&F" in (folder / "README.md").read_text()
    assert not any((home / "downloads").iterdir()), "the official .pth is deleted once converted"
    assert mirror.requests == [(DRIVE_ID, None, 200)]

    mirror.stop()  # the network is gone: the cached folder is used
    again = load_model(NAME)
    assert torch.equal(again.query_embed.weight, model.query_embed.weight)
    assert len(mirror.requests) == 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def _bad_file(case: str, tiny_file: bytes) -> bytes | None:
    if case == "truncated":
        return tiny_file[: len(tiny_file) // 2]
    if case == "random":
        return os.urandom(len(tiny_file) // 4)
    if case == "other_architecture":
        return official_bytes(tiny_config().replace(num_classes=65, with_box_refine=False))
    if case == "html":
        return b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
    if case == "pickled_code":
        buffer = io.BytesIO()
        torch.save({"model": {"w": torch.zeros(1)}, "extra": _Evil()}, buffer)
        return buffer.getvalue()
    return None  # 404


@pytest.mark.parametrize(("case", "message"), [
    ("truncated", "not a readable PyTorch checkpoint"),
    ("random", "not a readable PyTorch checkpoint"),
    ("other_architecture", "is not a tiny checkpoint .*key"),
    ("html", "sent a web page instead of the checkpoint"),
    ("pickled_code", "cannot be loaded safely"),
    ("not_found", "HTTP 404"),
])
def test_bad_downloads_are_one_line_errors_and_cache_nothing(case, message, mirror, home, tiny_file, capsys,
                                                            tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = _bad_file(case, tiny_file)
    if data is None:
        del mirror.files[DRIVE_ID]
    else:
        mirror.files[DRIVE_ID] = data
    assert main(["download", NAME, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("referformer download: error: ") and NAME in err, err
    assert "Traceback" not in err
    assert re.search(message, err), err
    if case != "not_found":
        assert "nothing was cached" in err
    assert_nothing_cached(home)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_an_interrupted_download_resumes_in_the_same_call(mirror: Mirror, home: Path, tiny_file: bytes) -> None:
    mirror.cut = 1  # the first response stops halfway
    folder = fetch_published(NAME, progress=False)
    assert [(r, s) for _, r, s in mirror.requests] == [(None, 200), (f"bytes={len(tiny_file) // 2}-", 206)]
    assert json.loads((folder / "manifest.json").read_text())["sha256"] == hashlib.sha256(tiny_file).hexdigest()


def test_an_interrupted_download_resumes_in_a_later_run(mirror: Mirror, home: Path, tiny_file: bytes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRIES", 0)
    mirror.cut = 1
    with pytest.raises(UserError, match="interrupted at .* run the same command again to resume") as info:
        fetch_published(NAME, progress=False)
    assert "\n" not in str(info.value)
    parts = list((home / "downloads").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == len(tiny_file) // 2
    assert not (home / "models" / NAME).exists()

    fetch_published(NAME, progress=False)  # the next run asks for the rest only
    assert mirror.requests[-1] == (DRIVE_ID, f"bytes={len(tiny_file) // 2}-", 206)
    assert (home / "models" / NAME / "manifest.json").is_file()
    assert not list((home / "downloads").iterdir())


def test_a_server_without_ranges_and_a_busy_server_still_give_the_file(mirror: Mirror, home: Path,
                                                                      tiny_file: bytes) -> None:
    mirror.ranges = False  # like `python -m http.server`: the retry gets the whole file again
    mirror.cut = 1
    mirror.unavailable = 1  # and a 503 first
    folder = fetch_published(NAME, progress=False)
    assert [s for _, _, s in mirror.requests] == [503, 200, 200]
    assert json.loads((folder / "manifest.json").read_text())["sha256"] == hashlib.sha256(tiny_file).hexdigest()


def test_a_partial_file_of_a_changed_source_is_not_resumed(mirror: Mirror, home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRIES", 0)
    mirror.cut = 1
    with pytest.raises(UserError):
        fetch_published(NAME, progress=False)
    # the file on the server changed (new ETag): If-Range makes the server send all of it again
    torch.manual_seed(1)
    buffer = io.BytesIO()
    save_official_checkpoint(build_model(tiny_config()).eval(), buffer)
    mirror.files[DRIVE_ID] = buffer.getvalue()
    folder = fetch_published(NAME, progress=False)
    _, asked, status = mirror.requests[-1]
    assert asked is not None and asked.startswith("bytes=") and status == 200  # a range asked, all of it sent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()


def test_two_concurrent_fetches_end_with_one_copy(mirror: Mirror, home: Path) -> None:
    mirror.delay = 0.01  # slow enough for the second fetch to start while the first downloads
    results: list[Path | BaseException] = []

    def fetch() -> None:
        try:
            results.append(fetch_published(NAME, progress=False))
        except BaseException as err:  # noqa: BLE001 - reported below
            results.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [home / "models" / NAME] * 2
    assert mirror.full_gets(DRIVE_ID) == 1
    assert [p.name for p in (home / "models").iterdir()] == [NAME]
    assert load_model(NAME).inference_settings == SETTINGS


@pytest.mark.parametrize("variable", ["REFERFORMER_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_refuses_to_download_and_says_what_to_run(variable, mirror, home, monkeypatch) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(UserError, match=r"downloads are off .* run `referformer download test-tiny`") as info:
        load_model(NAME)
    assert "\n" not in str(info.value)
    assert mirror.requests == []


def test_google_drive_is_read_with_gdown(home: Path, tiny_file: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    gdown = pytest.importorskip("gdown")
    monkeypatch.delenv("REFERFORMER_MIRROR", raising=False)
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(NAME, DRIVE_ID, "tiny", "ResNet-18", "synthetic"))
    calls = []

    def fake_download(*, id, output, quiet, resume, **kwargs):
        calls.append((id, resume))
        Path(output).write_bytes(tiny_file)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    folder = fetch_published(NAME, progress=False)
    assert calls == [(DRIVE_ID, True)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == f"https://drive.google.com/file/d/{DRIVE_ID}/view"


def test_a_known_sha256_is_checked(mirror: Mirror, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = zoo.PUBLISHED[NAME]
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(
        NAME, DRIVE_ID, entry.preset, entry.backbone, entry.dataset, sha256="0" * 64))
    with pytest.raises(UserError, match="has sha256 .*, expected 0000"):
        fetch_published(NAME, progress=False)
    assert_nothing_cached(home)


def test_a_conversion_killed_midway_leaves_nothing_that_loads(mirror: Mirror, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from referformer.checkpoint import install

    def killed(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(install, "write_model_card", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_published(NAME, progress=False)
    assert_nothing_cached(home)
    # what a process killed with SIGKILL would leave: a staging folder and a half-written entry
    (home / "models" / ".staging-test-tiny@x").mkdir(parents=True)
    (home / "models" / NAME).mkdir()
    (home / "models" / NAME / "config.json").write_text("{}")
    assert not cache.is_cached(NAME)
    monkeypatch.undo()
    monkeypatch.setenv("REFERFORMER_HOME", str(home))
    monkeypatch.setenv("REFERFORMER_MIRROR", mirror.base_url)
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(NAME, DRIVE_ID, "tiny", "ResNet-18", "synthetic"))
    assert fetch_published(NAME, progress=False) == home / "models" / NAME
    assert cache.cached_names() == [NAME] and not list((home / "models").glob(".staging-*"))


def test_unknown_names_suggest_published_ones(home: Path) -> None:
    with pytest.raises(UserError, match=r"checkpoint not found: ytvos-r5 \(did you mean ytvos-r50"):
        resolve_checkpoint("ytvos-r5")
    with pytest.raises(UserError, match="no published checkpoint named 'ytvos-r5'; did you mean ytvos-r50"):
        fetch_published("ytvos-r5")
