"""The package's shape: imports point down with no cycles (import-linter contracts in pyproject.toml),
and no module is longer than 400 lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import referformer

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(referformer.__file__).resolve().parent
MAX_LINES = 400


def test_import_contracts_are_kept() -> None:
    """`lint-imports` with the contracts of pyproject.toml: layers from the CLI down to errors, and
    no import cycle between the modules of any package (function-level imports count too)."""
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert executable is not None, "import-linter is part of the test extra: pip install '.[test]'"
    result = subprocess.run([executable, "--no-cache", str(REPO / "pyproject.toml")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_at_most_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by job"
