"""The command line's own surface: --version, help texts, the list of models."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

import referformer
from referformer.cli import COMMANDS, build_parser, main


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"referformer {referformer.__version__}"
    assert version("referformer") == referformer.__version__  # one home: pyproject reads it from the package


@pytest.mark.parametrize("command", COMMANDS)
def test_help_texts_have_no_rest_markup(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert f"usage: referformer {command}" in text and "``" not in text


def test_presets_lists_the_bundled_models(capsys) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "bundled models" in out and "synthetic-tiny" in out and "short side 96, window 5" in out
    assert main(["presets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["bundled"]["synthetic-tiny"]["inference"]["query_policy"] == "per_window"
    assert "ytvos-r50" in listing["presets"]
    assert build_parser().prog == "referformer"


def test_offline_flag_turns_downloads_off(monkeypatch, capsys) -> None:
    from referformer.text import offline_mode

    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    assert not offline_mode()
    assert main(["--offline", "presets"]) == 0
    assert offline_mode()
