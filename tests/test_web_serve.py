"""``referformer serve`` without a server or a browser: the command, the core install without
Gradio, the model catalog, the form parsing, per-run folders and progress reporting.

The page itself, driven in a real browser and through ``gradio_client``, is tests/test_web_app.py.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referformer import cli
from referformer.commands import serve
from referformer.errors import UserError
from referformer.inference.video_io import open_source
from referformer.web.models import ModelCatalog, local_models
from referformer.web.runs import (CountingSource, RunFolders, parse_count, parse_sentences, prepare_input,
                                  score_rows, zip_folder)


def test_serve_is_a_command_and_its_module_does_not_import_gradio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # from here on, `import gradio` fails
    importlib.reload(serve)
    args = cli.build_parser().parse_args(["serve", "--port", "8000", "--checkpoint", "a", "--checkpoint", "b"])
    assert (args.port, args.checkpoint, args.run) == (8000, ["a", "b"], serve.run)
    args = cli.build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.share, args.checkpoint) == ("127.0.0.1", 7860, False, [])


def test_without_gradio_serve_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real_find_spec = serve.importlib.util.find_spec
    monkeypatch.setattr(serve.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real_find_spec(name, *a))
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "referformer[web]"' in err


def test_bad_port_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["serve", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def _converted_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture(autouse=True)
def empty_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No downloaded checkpoint (the machine's own cache is not read)."""
    monkeypatch.setenv("REFERFORMER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REFERFORMER_MODELS", raising=False)
    return tmp_path / "home"


def test_catalog_offers_checkpoints_then_local_models_then_bundled(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _converted_folder(models / "ytvos-r50")
    (models / "ytvos_r101.pth").write_bytes(b"")  # an official file name -> its preset
    (models / "notes.pth").write_bytes(b"")  # not a model-zoo name: not offered
    (models / "empty").mkdir()
    mine = _converted_folder(tmp_path / "runs" / "ytvos-r50")  # same name as a local folder
    catalog = ModelCatalog.discover([str(mine)], models)
    assert catalog.names == ["ytvos-r50", "ytvos-r50-2", "ytvos-r101", "synthetic-tiny", "synthetic-tiny-v1"]
    assert catalog.default == "ytvos-r50" and catalog.get("ytvos-r50").source == str(mine)
    assert catalog.get("ytvos-r101").preset == "ytvos-r101"
    assert ("synthetic-tiny (bundled)", "synthetic-tiny") in catalog.choices()
    assert [e.name for e in local_models(models)] == ["ytvos-r50", "ytvos-r101"]
    with pytest.raises(UserError, match="unknown model 'nope': choose one of ytvos-r50, ytvos-r50-2, ytvos-r101"):
        catalog.get("nope")
    with pytest.raises(UserError, match="checkpoint not found"):
        ModelCatalog.discover([str(tmp_path / "missing")])
    assert ModelCatalog.discover(["synthetic-tiny"], tmp_path / "runs").names == [
        "synthetic-tiny", "ytvos-r50", "synthetic-tiny-v1"]


def test_downloaded_official_checkpoints_are_offered(empty_model_cache: Path, tmp_path: Path) -> None:
    for name in ("ytvos-r101", "ytvos-r50"):
        entry = _converted_folder(empty_model_cache / "models" / name)
        (entry / "manifest.json").write_text("{}")
    _converted_folder(empty_model_cache / "models" / "ytvos-swin-l")  # no manifest: not a complete entry
    catalog = ModelCatalog.discover()
    assert catalog.names == ["ytvos-r50", "ytvos-r101", "synthetic-tiny", "synthetic-tiny-v1"]  # the model zoo's order
    assert catalog.get("ytvos-r50").origin == "official" and catalog.get("ytvos-r50").source == "ytvos-r50"
    # given with --checkpoint, by name or by folder: offered once, first
    assert ModelCatalog.discover(["ytvos-r101"]).names == [
        "ytvos-r101", "ytvos-r50", "synthetic-tiny", "synthetic-tiny-v1"]
    assert ModelCatalog.discover([str(empty_model_cache / "models" / "ytvos-r50")]).names[:2] == [
        "ytvos-r50", "ytvos-r101"]


def test_models_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _converted_folder(tmp_path / "mine")
    monkeypatch.setenv("REFERFORMER_MODELS", str(tmp_path))
    assert ModelCatalog.discover().names == ["mine", "synthetic-tiny", "synthetic-tiny-v1"]
    monkeypatch.setenv("REFERFORMER_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="models folder not found"):
        ModelCatalog.discover()


def test_form_values_are_checked() -> None:
    assert parse_sentences("  the red   circle \n\n a square\n") == ["the red circle", "a square"]
    for empty in ("", " \n\t\n", None):
        with pytest.raises(UserError, match="the sentence is empty"):
            parse_sentences(empty)
    assert parse_count(None, "window") is None and parse_count("", "window") is None
    assert parse_count(5.0, "window") == 5 and parse_count("3", "max frames") == 3
    for bad in (0, -2, 2.5, "x", float("nan")):
        with pytest.raises(UserError, match="window must be a whole number"):
            parse_count(bad, "window")


def test_uploads_become_one_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no video"):
        prepare_input(None, tmp_path)
    with pytest.raises(UserError, match="no video"):
        prepare_input([], tmp_path)
    assert prepare_input(["/x/clip.mp4"], tmp_path) == Path("/x/clip.mp4")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for name in ("f2.png", "f10.png", "f1.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(uploads / name)
    folder = tmp_path / "run"
    folder.mkdir()
    frames = prepare_input([str(uploads / n) for n in ("f2.png", "f10.png", "f1.png")], folder)
    assert frames.parent == folder and [f.name for f in open_source(frames)] == ["f1", "f2", "f10"]
    (uploads / "notes.txt").write_text("hello")
    other = tmp_path / "run2"
    other.mkdir()
    with pytest.raises(UserError, match="notes.txt: several files are read as the frames"):
        prepare_input([str(uploads / "f1.png"), str(uploads / "notes.txt")], other)


def test_run_folders_are_separate_pruned_and_removed(tmp_path: Path) -> None:
    folders = RunFolders(keep_s=60, parent=tmp_path)
    a, b = folders.new(), folders.new()
    assert a != b and a.parent == b.parent == folders.root
    folders.finished(a)
    folders.prune(now=time.monotonic() + 30)
    assert a.is_dir()
    folders.prune(now=time.monotonic() + 61)
    assert not a.exists() and b.is_dir()  # b has not finished: kept whatever its age
    folders.close()
    assert not folders.root.exists()


def test_progress_counts_frames_of_each_window(tmp_path: Path) -> None:
    for t in range(7):
        Image.fromarray(np.full((8, 8, 3), t, np.uint8)).save(tmp_path / f"{t:05d}.png")
    reports: list[tuple[int, int | None]] = []
    source = CountingSource(open_source(tmp_path), lambda done, total: reports.append((done, total)))
    assert [len(w) for w in source.windows(3, prefetch=True)] == [3, 3, 1]
    assert reports == [(0, 7), (3, 7), (6, 7), (7, 7)]
    assert source.info.num_frames == 7 and len(list(source)) == 7  # the rest is the wrapped source's


def test_zip_and_scores_of_a_segment_folder(tmp_path: Path) -> None:
    out = tmp_path / "segment"
    (out / "0_a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(out / "0_a" / "00000.png")
    results = {"sentences": [{"text": "a", "frames": [{"frame": "00000", "score": 0.5},
                                                      {"frame": "00001", "score": None}]}]}
    (out / "results.json").write_text(json.dumps(results))
    import zipfile

    with zipfile.ZipFile(zip_folder(out, tmp_path / "x.zip")) as zf:
        assert sorted(zf.namelist()) == ["0_a/00000.png", "results.json"]
    assert score_rows(results) == [{"frame": 0, "name": "00000", "sentence": "0: a", "score": 0.5}]
