"""Our folders on the Hugging Face Hub: the model card, ``push_to_hub`` and ``hf://`` resolution.

The real Hub is never contacted: ``HfApi`` is replaced by a stand-in that writes the commit into a
local folder, ``snapshot_download`` by one that returns it; the offline path runs the real
``snapshot_download`` against a Hugging Face cache laid out in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch

from referformer.checkpoint import load_model, model_card, push_to_hub, resolve_checkpoint, save_pretrained
from referformer.checkpoint.hub import parse_hub_uri
from referformer.errors import UserError
from referformer.models import build_model
from referformer.presets import tiny_config

REPORT = {"dataset": "synthetic", "split": "test", "checkpoint": "x", "J&F": 0.9051, "J": 0.9, "F": 0.91,
          "num_expressions": 1056, "inference": {"short_side": 96}}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    out = save_pretrained(model, tmp_path / "tiny", metadata={"name": "tiny-test", "preset": "tiny",
                                                              "description": "A tiny test model."})
    (out / "report.json").write_text(json.dumps(REPORT))
    return out


def test_model_card_is_written_from_the_config_and_the_report(folder: Path) -> None:
    card = model_card(folder, repo_id="someone/tiny")
    assert card.startswith("---\nlibrary_name: referformer\n")
    assert "# someone/tiny" in card and "A tiny test model." in card
    assert "| backbone | resnet18 |" in card and "| num_queries | 3 |" in card
    assert "| short_side | 360 |" in card and "| query_policy | per_video |" in card
    assert "### synthetic test" in card and "| J&F | 0.9051 |" in card and "| num_expressions | 1056 |" in card
    assert "| checkpoint |" not in card  # the run's context is not a score
    assert 'Predictor.from_pretrained(\'hf://someone/tiny\')' in card
    assert "--checkpoint hf://someone/tiny" in card and "@inproceedings{wu2022referformer" in card
    extra = model_card(folder, reports=[{"dataset": "davis", "split": "valid", "J&F": 61.1}])
    assert "### davis valid" in extra and "| J&F | 61.10 |" in extra


def test_model_card_lists_official_results(tmp_path: Path) -> None:
    model = build_model(tiny_config()).eval()
    out = save_pretrained(model, tmp_path / "m", metadata={"name": "ytvos-r50", "source": "https://x", "sha256": "ab",
                                                           "official_results": {"Ref-YouTube-VOS J&F": 55.6}})
    card = model_card(out)
    assert "## Official results" in card and "| Ref-YouTube-VOS J&F | 55.60 |" in card
    assert "| sha256 | ab |" in card and "Predictor.from_pretrained('ytvos-r50')" in card
    with pytest.raises(UserError, match="not readable JSON"):
        (tmp_path / "bad.json").write_text("{")
        model_card(out, reports=[tmp_path / "bad.json"])


class FakeHub:
    """Stands in for the Hub: ``create_commit`` writes the files under ``root/<repo_id>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: list[tuple[str, bool]] = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        self.repos.append((repo_id, bool(private)))

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, **kwargs):
        target = self.root / repo_id
        for op in operations:
            path = target / op.path_in_repo
            path.parent.mkdir(parents=True, exist_ok=True)
            source = op.path_or_fileobj
            if isinstance(source, bytes):
                path.write_bytes(source)
            else:
                shutil.copyfile(source, path)
        return f"https://huggingface.co/{repo_id}/commit/fake"

    def snapshot_download(self, repo_id, *, revision=None, local_files_only=False, **kwargs):
        assert not local_files_only
        path = self.root / repo_id
        if not path.is_dir():
            import httpx

            response = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 Client Error: repository {repo_id} not found",
                                                                 response=response)
        return str(path)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda api, *a, **k: fake.create_repo(*a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", lambda api, *a, **k: fake.create_commit(*a, **k))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    for variable in ("REFERFORMER_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    return fake


def test_push_a_folder_then_load_it_by_hf_address(hub: FakeHub, folder: Path) -> None:
    url = push_to_hub(folder, "someone/tiny", private=True)
    assert url == "https://huggingface.co/someone/tiny/commit/fake" and hub.repos == [("someone/tiny", True)]
    pushed = hub.root / "someone" / "tiny"
    assert sorted(p.name for p in pushed.iterdir()) == ["README.md", "config.json", "model.safetensors", "report.json"]
    assert "| J&F | 0.9051 |" in (pushed / "README.md").read_text()
    model = load_model("hf://someone/tiny")
    reference = load_model(folder)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.checkpoint_path == pushed
    with pytest.raises(UserError, match=r"could not fetch hf://someone/nothing from the Hugging Face Hub: 404"):
        load_model("hf://someone/nothing")


def test_push_a_loaded_model_with_its_tokenizer(hub: FakeHub) -> None:
    push_to_hub(load_model("synthetic-tiny-v1"), "someone/synthetic")
    pushed = hub.root / "someone" / "synthetic"
    assert (pushed / "tokenizer" / "tokenizer.json").is_file() and (pushed / "README.md").is_file()
    from referformer.inference.predictor import Predictor

    predictor = Predictor.from_pretrained("hf://someone/synthetic", device="cpu")
    assert len(predictor.tokenizer) == 525 and predictor.settings.short_side == 96


def test_push_refuses_what_is_not_our_folder(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not one of our model folders"):
        push_to_hub(tmp_path, "someone/empty")


def _lay_out_hf_cache(cache: Path, repo_id: str, source: Path) -> None:
    """What ``huggingface-cli download`` leaves: refs/main -> a commit, snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_offline_hf_addresses_read_the_local_hugging_face_cache(folder, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "hf-cache"
    _lay_out_hf_cache(cache, "someone/tiny", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_checkpoint("hf://someone/tiny")
    assert path == cache / "models--someone--tiny" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    assert torch.equal(load_model("hf://someone/tiny").query_embed.weight, load_model(folder).query_embed.weight)
    with pytest.raises(UserError, match=r"hf://someone/other is not in the Hugging Face cache and downloads are off .*; "
                                        r".*`huggingface-cli download someone/other`") as info:
        resolve_checkpoint("hf://someone/other")
    assert "\n" not in str(info.value)


def test_hf_addresses_are_checked() -> None:
    assert parse_hub_uri("hf://owner/repo") == ("owner/repo", None)
    assert parse_hub_uri("hf://owner/repo@v1.0") == ("owner/repo", "v1.0")
    with pytest.raises(UserError, match="write hf://OWNER/REPO"):
        parse_hub_uri("hf://just-a-name")
