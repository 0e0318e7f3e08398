"""The table of published checkpoints (``referformer.checkpoint.zoo``) against its sources:
``../shared/reference/WEIGHTS.md`` (names, Google Drive ids, official numbers) and the parameter
counts of ``model/params_summary.tsv``; and every entry's architecture is the release one."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from referformer.checkpoint.zoo import PUBLISHED, RELEASE_PARAMS
from referformer.presets import get_preset


def _weights_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and re.fullmatch(r"[a-z0-9-]+", cells[0]) and cells[0] != "preset":
            rows[cells[0]] = cells
    return rows


def test_every_published_checkpoint_of_weights_md_is_listed_with_its_id_and_numbers(shared_reference: Path) -> None:
    text = (shared_reference / "WEIGHTS.md").read_text()
    rows = _weights_rows(text)
    assert len(rows) == 25 and set(rows) == set(PUBLISHED)
    jhmdb = {m.group(1): [float(x) for x in m.group(2, 3, 4)]
             for m in re.finditer(r"-?([TSB]) (\d+\.\d) / (\d+\.\d) / (\d+\.\d)", " ".join(text.split()))}
    for name, cells in rows.items():
        entry = PUBLISHED[name]
        assert entry.drive_id == cells[-1], name
        numbers = [float(x) for cell in cells[2:-1] for x in re.findall(r"\d+\.\d", cell)]
        if name.startswith("a2d-video-swin-") and not name.endswith("scratch"):
            numbers += jhmdb[name[-1].upper()]
        assert Counter(entry.results.values()) == Counter(numbers), name


def test_parameter_counts_are_the_reference_ones(shared_reference: Path) -> None:
    lines = (shared_reference / "model" / "params_summary.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    release = {row["backbone"]: int(row["params_total"]) for row in (dict(zip(header, line.split("\t")))
                                                                      for line in lines[1:]) if row["config"] == "release"}
    assert RELEASE_PARAMS == release


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_entry_has_the_release_architecture(name: str) -> None:
    entry = PUBLISHED[name]
    config = entry.model_config()
    assert config == get_preset(f"{config.backbone}-release").config
    assert config.backbone in RELEASE_PARAMS and entry.approx_bytes() == RELEASE_PARAMS[config.backbone] * 4
    assert entry.source_url == f"https://drive.google.com/file/d/{entry.drive_id}/view"
    assert entry.official_file.endswith(".pth") and entry.inference.short_side == 360
