"""The tokenizer by Hub name: fetched through ``huggingface_hub`` on first use, a clear error offline.

``snapshot_download`` is replaced where a network would be needed; the offline case runs the real
one against an empty Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from referformer.checkpoint import bundled_model_dir
from referformer.errors import UserError
from referformer.text import TOKENIZER_HUB_FILES, load_tokenizer


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)


def test_a_missing_hub_tokenizer_is_fetched_once(online, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_snapshot_download(repo_id, *, allow_patterns=None, local_files_only=False, **kwargs):
        calls.append((repo_id, tuple(allow_patterns), local_files_only))
        return str(bundled_model_dir("synthetic-tiny-v1") / "tokenizer")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    tokenizer = load_tokenizer("referformer-test/tokenizer")
    assert len(tokenizer) == 525 and tokenizer.pad_token_id == 1
    assert calls == [("referformer-test/tokenizer", tuple(TOKENIZER_HUB_FILES), False)]
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= set(TOKENIZER_HUB_FILES)


def test_an_unreachable_hub_is_one_line_that_says_what_to_run(online, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub.\nPlease check your internet connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(UserError, match=r"tokenizer 'roberta-base' is not available offline and fetching it from the "
                                        r"Hugging Face Hub failed: An error happened") as info:
        load_tokenizer("roberta-base")
    assert "\n" not in str(info.value) and "huggingface-cli download roberta-base" in str(info.value)


@pytest.mark.parametrize("variable", ["REFERFORMER_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_reads_only_the_cache_and_says_where_to_fetch(variable, online, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv(variable, "1")
    with pytest.raises(UserError, match=r"tokenizer 'roberta-base' is not available offline and downloads are off "
                                        r".*on a connected machine run `huggingface-cli download roberta-base`.* "
                                        r"copy ~/.cache/huggingface") as info:
        load_tokenizer("roberta-base")
    assert "\n" not in str(info.value)


def test_paths_are_never_looked_up_on_the_hub(online, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("no Hub lookup for a path"))
    with pytest.raises(UserError, match="is not available offline \\(no such folder\\)"):
        load_tokenizer(str(tmp_path / "missing" / "tokenizer"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no usable tokenizer in"):
        load_tokenizer(tmp_path / "empty")
