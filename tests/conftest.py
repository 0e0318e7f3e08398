"""Shared pytest fixtures.

``../shared/reference`` (beside the clone) holds the reference material of the original code:
checkpoint key specs, model fixtures, dataset-format generators and expected loader outputs. Tests
that need it use the ``shared_reference`` fixture, which skips with a clear reason when the folder
is absent (e.g. on a user's machine), so such a test never passes silently.

The repository root is appended to ``sys.path`` (after the installed package, which it does not
shadow): the scripts beside the package (``recipes/``, ``tools/``) are imported as
``recipes.synthetic_tiny`` and ``tools.fixture``. The test stand-ins live in
``tests/toy.py`` (``from toy import ToyClips``; pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
SHARED_REFERENCE = Path(
    os.environ.get("REFERFORMER_SHARED_REFERENCE", REPO_ROOT.parent / "shared" / "reference")
)


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """Path of ``../shared/reference``; skips the test if it is not there."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(
            f"reference material not found at {SHARED_REFERENCE} "
            "(set REFERFORMER_SHARED_REFERENCE to the shared/reference folder)"
        )
    return SHARED_REFERENCE


@pytest.fixture(scope="session")
def make_synthetic_root(tmp_path_factory):
    """``make(seed, num_videos, splits, config=None)`` -> a new ``referformer synth`` dataset folder
    (``config`` default: ``SceneConfig()``) with the synthetic tokenizer in ``tokenizer/``."""
    from referformer.synthetic import SceneConfig, build_synthetic_tokenizer, generate_dataset

    def make(seed: int, num_videos: int, splits: list[str], config: SceneConfig | None = None) -> Path:
        root = tmp_path_factory.mktemp("synthetic")
        generate_dataset(root, seed=seed, num_videos=num_videos, splits=splits, config=config or SceneConfig(),
                         progress=False)
        build_synthetic_tokenizer(root / "tokenizer")
        return root

    return make


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: the package's downloads (weights by name, the Hub tokenizer)
    stay off unless a test turns them on against its loopback mirror."""
    monkeypatch.setenv("REFERFORMER_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored after): on a loaded 2-core machine two OpenMP
    threads made the short training runs about 10x slower. A whole file: ``pytestmark =
    pytest.mark.usefixtures("one_thread")``."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_thread_per_module():
    """``one_thread`` for a whole module, its module-scoped fixtures (models built once) included."""
    yield from _single_thread()
