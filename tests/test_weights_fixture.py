"""A full-size published-format checkpoint through the download path gives the original's outputs.

The ResNet-50 release fixture's deterministic weights (``../shared/reference/detweights.py`` with
``keys_resnet50_release.tsv``, seed 0) are saved as the official code saves a checkpoint
(``{"model": state_dict, "args": Namespace}``, with the ``text_encoder.embeddings.position_ids``
buffer of 2022 transformers), served from a loopback mirror under a test-registered name, and
loaded with ``load_model(name)``: downloaded, verified, converted, cached, then run on the fixture's
inputs. Its outputs must be the original code's; a second load works with the server stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from referformer.checkpoint import download, load_model, zoo
from tools.fixture import find_detweights, import_file, run_fixture
from weights_mirror import Mirror

NAME, DRIVE_ID, FIXTURE = "test-fixture-r50", "test-fixture-r50-id", "resnet50_release_seed0"


@pytest.fixture(scope="module")
def official_file(shared_reference: Path, tmp_path_factory) -> Path:
    keys = shared_reference / "model" / "keys_resnet50_release.tsv"
    detweights = import_file(find_detweights(keys))
    state_dict, _ = detweights.generate_state_dict(detweights.read_spec(str(keys)), 0)
    state_dict["text_encoder.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)  # the documented extra
    path = tmp_path_factory.mktemp("official") / "ytvos_r50.pth"
    torch.save({"model": state_dict, "args": argparse.Namespace(backbone="resnet50", binary=True), "epoch": 5}, path)
    return path


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a.float() - b.float()).abs()
    assert bool((diff <= atol + rtol * b.float().abs()).all()), f"max abs diff {diff.max().item():.3g}"


def test_fixture_weights_download_convert_and_match_the_original(official_file, shared_reference, tmp_path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("REFERFORMER_HOME", str(tmp_path / "home"))
    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    monkeypatch.setitem(zoo.PUBLISHED, NAME, zoo.PublishedCheckpoint(NAME, DRIVE_ID, "resnet50-release",
                                                                     "ResNet-50", "ref-youtube-vos"))
    mirror = Mirror()
    mirror.files[DRIVE_ID] = official_file
    monkeypatch.setenv("REFERFORMER_MIRROR", mirror.base_url)
    try:
        model = load_model(NAME)
    finally:
        mirror.stop()
    assert model.checkpoint_path == tmp_path / "home" / "models" / NAME
    fixture = torch.load(shared_reference / "model" / "fixtures" / f"{FIXTURE}.pt", map_location="cpu",
                         weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ours = run_fixture(fixture, model, record=False)
    finally:
        torch.set_num_threads(threads)
    ref, out = fixture["outputs"], ours["outputs"]
    _close(out["pred_logits"], ref["pred_logits"], 1e-4)
    _close(out["pred_boxes"], ref["pred_boxes"], 1e-4)
    _close(out["pred_masks"], ref["pred_masks"], 1e-3, 1e-4)
    assert ours["postprocess"]["selected_query"] == fixture["postprocess"]["selected_query"]

    again = load_model(NAME)  # the server is gone: the converted folder is read
    for key in ("query_embed.weight", "backbone.body.conv1.weight", "text_encoder.embeddings.word_embeddings.weight"):
        assert torch.equal(again.state_dict()[key], model.state_dict()[key]), key
    assert len(mirror.requests) == 1
