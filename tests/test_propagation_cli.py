"""``referformer propagate``: the output layout (palette label maps, results.json, overlay), the
given frames written exactly, and bad masks / inputs refused with one line before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from propagation_toys import BLUE, RED, colour_mask, draw, save_frames, save_palette

from referformer import cli
from referformer.checkpoint import save_pretrained
from referformer.inference.writers import decode_mask_rle
from referformer.models.propagation import build_propagator, propagator_preset
from referformer.palette import VOC_PALETTE

H, W, T = 32, 48, 10


@pytest.fixture(scope="module")
def propagator_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(build_propagator(propagator_preset("propagator-tiny")), tmp_path_factory.mktemp("p") / "prop")


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    frames = draw(H, W, [[(RED, 2 + 3 * t, 4, 8), (BLUE, 30, 20, 8)] for t in range(T)])
    return save_frames(frames, tmp_path / "frames"), frames


def run(*argv) -> int:
    return cli.main(["propagate", *map(str, argv)])


def test_outputs(tmp_path: Path, scene, propagator_dir: Path, capsys) -> None:
    folder, frames = scene
    labels = colour_mask(frames[3], RED) * 1 + colour_mask(frames[3], BLUE) * 4
    mask = save_palette(labels, tmp_path / "00003.png")
    out = tmp_path / "out"
    assert run(folder, "--mask", mask, "--out", out, "--propagator", propagator_dir, "--device", "cpu",
               "--window", 4, "--json", "--quiet") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_frames"] == T and summary["complete"]
    assert [o["object_id"] for o in summary["objects"]] == [1, 4]
    assert sorted(p.name for p in out.iterdir()) == ["masks", "overlay.mp4", "results.json"]
    pngs = sorted((out / "masks").iterdir())
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(T)]
    with Image.open(out / "masks" / "00003.png") as image:
        assert image.mode == "P" and image.getpalette()[:12] == list(VOC_PALETTE[:12])
        assert np.array_equal(np.array(image), labels)  # the given frame, exactly
    for path in pngs:
        assert set(np.unique(np.array(Image.open(path)))) <= {0, 1, 4}
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "propagation" and results["objects"] == [1, 4]
    assert results["prompts"] == [{"frame": "00003", "objects": [1, 4]}]
    first = results["sentences"][0]
    assert (first["text"], first["object_id"], first["query"], first["mask_dir"]) == ("object 1", 1, None, None)
    assert np.array_equal(decode_mask_rle(first["frames"][3]["mask_rle"]), labels == 1)
    assert first["frames"][3]["box_xyxy"] == [11.0, 4.0, 19.0, 12.0] and first["frames"][3]["score"] == 1.0
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == T
    # --overwrite replaces the outputs; --objects keeps only some ids
    assert run(folder, "--mask", mask, "--out", out, "--propagator", propagator_dir, "--device", "cpu",
               "--overwrite", "--objects", "4", "--no-overlay", "--quiet") == 0
    assert sorted(p.name for p in out.iterdir()) == ["masks", "results.json"]
    assert json.loads((out / "results.json").read_text())["objects"] == [4]
    assert set(np.unique(np.array(Image.open(out / "masks" / "00003.png")))) == {0, 4}


def _png(tmp_path: Path, name: str, array: np.ndarray, mode: str = "P") -> Path:
    path = tmp_path / name
    if mode == "P":
        return save_palette(array, path)
    Image.fromarray(array).convert(mode).save(path)
    return path


def _labels(value: int = 1, size: tuple[int, int] = (H, W)) -> np.ndarray:
    labels = np.zeros(size, np.uint8)
    labels[4:12, 2:10] = value
    return labels


@pytest.mark.parametrize(("make_mask", "extra", "message"), [
    (lambda d: _png(d, "00000.png", _labels(size=(H, W + 2))), [], r"mask .*00000.png is 50x32 but the frames are 48x32"),
    (lambda d: _png(d, "00000.png", np.zeros((H, W), np.uint8)), [], r"mask .*00000.png is empty"),
    (lambda d: _png(d, "00000.png", _labels(2)), ["--objects", "3"], r"object 3 is in none of the masks \(they hold ids 2\)"),
    (lambda d: _png(d, "00000.png", _labels(255), "L"), [], r"is a 'L' PNG, not a palette PNG"),
    (lambda d: _png(d, "00000.png", np.stack([_labels()] * 3, -1), "RGB"), [], r"is a 'RGB' PNG, not a palette PNG"),
    (lambda d: (d / "00000.png").write_bytes(b"not an image") and d / "00000.png", [], r"is not a readable image"),
    (lambda d: d / "00001.png", [], r"mask .*00001.png not found"),
    (lambda d: _png(d, "00042.png", _labels()), [], r"the input has no frame named '00042'"),
    (lambda d: _png(d, "00000.png", _labels()), ["--window", "0"], r"--window must be at least 1"),
    (lambda d: _png(d, "00000.png", _labels()), ["--propagator", "nowhere"], r"propagator not found: nowhere"),
    (lambda d: _png(d, "00000.png", _labels()), ["--propagator", "sam2:configs/x.yaml"], r"sam2"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path: Path, scene, propagator_dir: Path, capsys,
                                                    make_mask, extra, message) -> None:
    import re

    folder, _ = scene
    mask = make_mask(tmp_path)
    out = tmp_path / "out"
    argv = [folder, "--mask", mask, "--out", out, "--propagator", propagator_dir, "--device", "cpu", "--quiet", *extra]
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("referformer propagate: error: ") and "\n" not in err and re.search(message, err), err
    assert not out.exists()


def test_two_masks_for_one_frame_and_an_existing_output(tmp_path: Path, scene, propagator_dir: Path, capsys) -> None:
    folder, _ = scene
    (tmp_path / "a").mkdir()
    first = _png(tmp_path, "00002.png", _labels())
    second = _png(tmp_path / "a", "00002.png", _labels(3))
    assert run(folder, "--mask", first, "--mask", second, "--out", tmp_path / "o", "--propagator", propagator_dir) == 2
    assert "are for the same frame '00002'" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    assert run(folder, "--mask", first, "--out", tmp_path / "o", "--propagator", propagator_dir) == 2
    assert "already exists" in capsys.readouterr().err
