"""Shared pytest fixtures.

``../shared/reference`` (beside the clone) holds the reference material of the original code:
checkpoint key specs, model fixtures, dataset-format generators and expected loader outputs. Tests
that need it use the ``shared_reference`` fixture, which skips with a clear reason when the folder
is absent (e.g. on a user's machine), so such a test never passes silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
