"""Our format (config.json + model.safetensors) and the convert command."""

from __future__ import annotations

import json

import torch

from referformer.checkpoint import load_model, save_official_checkpoint, save_pretrained
from referformer.cli import main as cli_main
from referformer.config import ModelConfig
from referformer.models import build_model
from referformer.presets import get_preset


def _inputs():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(1, 2, 3, 64, 64, generator=g)
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    return frames, ids, torch.ones_like(ids)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model(get_preset("tiny").config).eval()
    save_pretrained(model, tmp_path / "m", metadata={"preset": "tiny"})
    payload = json.loads((tmp_path / "m" / "config.json").read_text())
    assert ModelConfig.from_dict(payload["model"]) == model.config
    loaded = load_model(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # tied heads stay tied after loading
    assert loaded.bbox_embed[1] is loaded.transformer.decoder.bbox_embed[1]
    with torch.no_grad():
        a, b = model(*_inputs()), loaded(*_inputs())
    assert torch.equal(a["pred_masks"], b["pred_masks"])


def test_convert_command(tmp_path, capsys):
    torch.manual_seed(2)
    model = build_model(get_preset("tiny").config).eval()
    save_official_checkpoint(model, tmp_path / "official.pth")
    assert cli_main(["convert", str(tmp_path / "official.pth"), "--preset", "tiny", "--out", str(tmp_path / "c")]) == 0
    loaded = load_model(tmp_path / "c")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    # a wrong preset is a one-line error naming the cause, exit code 2
    assert cli_main(["convert", str(tmp_path / "official.pth"), "--preset", "resnet50-release",
                     "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "resnet18" in err and "resnet50" in err and len(err.strip().splitlines()) == 1


def test_presets_command(capsys):
    assert cli_main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("ytvos-r50", "ytvos-r101", "ytvos-video-swin-b", "a2d-video-swin-t", "resnet50-release",
                 "resnet101-default", "tiny"):
        assert name in out
