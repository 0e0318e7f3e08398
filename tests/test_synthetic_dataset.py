"""The synthetic benchmark: determinism, Ref-YouTube-VOS format, unique expressions, kind labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referformer.cli import main as cli_main
from referformer.errors import DatasetFormatError
from referformer.palette import VOC_PALETTE
from referformer.synthetic.facts import MOVE_MIN, SceneFacts
from referformer.synthetic.grammar import KINDS, grammar_vocabulary
from referformer.synthetic.kinds import expression_groups, read_expression_kinds
from referformer.synthetic.scenes import COLOURS, DIRECTIONS, SHAPES, SceneConfig
from referformer.synthetic.writer import SYNTHETIC_CATEGORIES, generate_dataset, make_video

CONFIG = SceneConfig(height=64, width=96, num_frames=8)
SEED = 7
VIDEOS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, SEED, VIDEOS, config=CONFIG, progress=False)
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(tmp_path, dataset):
    again = tmp_path / "again"
    generate_dataset(again, SEED, VIDEOS, config=CONFIG, progress=False)
    first, second = _tree(dataset), _tree(again)
    assert list(first) == list(second)
    assert all(first[k] == second[k] for k in first)


def test_split_written_alone_matches_and_seed_matters(tmp_path, dataset):
    alone = tmp_path / "alone"
    generate_dataset(alone, SEED, VIDEOS, splits=("test",), config=CONFIG, progress=False)
    roots = ("synthetic.json", "expression_kinds.json")  # these list the splits present
    mine = _tree(alone, skip=roots)
    full = _tree(dataset, skip=roots)
    assert mine and all(full[k] == v for k, v in mine.items())
    other = tmp_path / "other"
    generate_dataset(other, SEED + 1, 1, splits=("test",), config=CONFIG, progress=False)
    assert set(_json(other / "test" / "meta.json")["videos"]).isdisjoint(_json(dataset / "test" / "meta.json")["videos"])


# ------------------------------------------------------------------------------------------------
# Format (DATASETS.md section 1)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_ytvos_layout_and_files(dataset, split):
    meta = _json(dataset / split / "meta.json")["videos"]
    exps = _json(dataset / "meta_expressions" / split / "meta_expressions.json")["videos"]
    assert list(meta) == list(exps) and len(exps) == VIDEOS
    for vid, entry in exps.items():
        assert re.fullmatch(r"[0-9a-f]{10}", vid)
        assert set(entry) == {"expressions", "frames"}
        assert entry["frames"] == [f"{5 * t:05d}" for t in range(CONFIG.num_frames)]
        assert list(entry["expressions"]) == [str(i) for i in range(len(entry["expressions"]))]
        objects = meta[vid]["objects"]
        assert all(o["category"] in SHAPES for o in objects.values())
        texts = [e["exp"] for e in entry["expressions"].values()]
        assert len(set(texts)) == len(texts)
        for e in entry["expressions"].values():
            assert set(e) == {"exp", "obj_id"} and e["obj_id"] in objects
            assert e["exp"] == " ".join(e["exp"].lower().split())
        seen: dict[str, list[str]] = {oid: [] for oid in objects}
        for frame in entry["frames"]:
            jpg = Image.open(dataset / split / "JPEGImages" / vid / f"{frame}.jpg")
            assert jpg.format == "JPEG" and jpg.mode == "RGB" and jpg.size == (CONFIG.width, CONFIG.height)
            png = Image.open(dataset / split / "Annotations" / vid / f"{frame}.png")
            assert png.format == "PNG" and png.mode == "P" and png.size == jpg.size
            assert png.getpalette()[:3 * 8] == list(VOC_PALETTE[:3 * 8])
            ids = set(np.unique(np.array(png)).tolist()) - {0}
            assert ids <= {int(o) for o in objects}
            for oid in ids:
                seen[str(oid)].append(frame)
        assert {oid: o["frames"] for oid, o in objects.items()} == seen


def test_loads_through_the_ytvos_reader(dataset):
    try:
        from referformer.data.ytvos import build_ytvos
    except ImportError as err:  # pragma: no cover - the reader is another module's job
        pytest.skip(f"referformer.data.ytvos not importable: {err}")
    train = build_ytvos(dataset, "train", num_frames=3, categories=SYNTHETIC_CATEGORIES)
    frames, target = train[0]
    vid, exp_id = target["video_id"], target["exp_id"]
    entry = _json(dataset / "meta_expressions" / "train" / "meta_expressions.json")["videos"][vid]
    obj_id = int(entry["expressions"][exp_id]["obj_id"])
    category = _json(dataset / "train" / "meta.json")["videos"][vid]["objects"][str(obj_id)]["category"]
    assert target["caption"] == entry["expressions"][exp_id]["exp"]
    assert target["labels"].tolist() == [SYNTHETIC_CATEGORIES[category]] * 3
    for name, mask in zip(target["frame_names"], target["masks"]):
        png = np.array(Image.open(dataset / "train" / "Annotations" / vid / f"{name}.png"))
        assert np.array_equal(np.asarray(mask, dtype=bool), png == obj_id)
    for split in ("valid", "test"):
        n_exp = sum(len(v["expressions"]) for v in
                    _json(dataset / "meta_expressions" / split / "meta_expressions.json")["videos"].values())
        assert len(build_ytvos(dataset, split)) == n_exp


# ------------------------------------------------------------------------------------------------
# Expressions are unique, and their claims hold on the written frames
# ------------------------------------------------------------------------------------------------
def test_every_expression_is_unique_against_the_ground_truth():
    n = 0
    for index in range(8):
        video = make_video(SEED, "train", index, CONFIG)
        facts = SceneFacts(video.scene)
        for e in video.expressions:
            assert facts.evaluate_all(e.descriptor.atoms, e.obj_id) is True, e.text
            for other in facts.object_ids:
                if other != e.obj_id:
                    assert facts.evaluate_all(e.descriptor.atoms, other) is False, (e.text, other)
            n += 1
    assert n > 40


def _centroids(dataset: Path, split: str, vid: str, obj_id: int) -> tuple[np.ndarray, np.ndarray]:
    frames = _json(dataset / "meta_expressions" / split / "meta_expressions.json")["videos"][vid]["frames"]
    areas, cents = [], []
    for f in frames:
        m = np.array(Image.open(dataset / split / "Annotations" / vid / f"{f}.png")) == obj_id
        ys, xs = np.nonzero(m)
        areas.append(m.sum())
        cents.append((xs.mean(), ys.mean()) if m.any() else (np.nan, np.nan))
    return np.array(areas), np.array(cents)


def test_expression_claims_hold_on_disk(dataset):
    """Independent of the generator's predicates: colour from JPEG pixels, category and size from
    the scene records, motion direction from the annotation masks and the trajectories."""
    checked = {"colour": 0, "motion": 0, "appearance_only": 0}
    for split in ("train", "test"):
        scenes = _json(dataset / split / "scenes.json")["videos"]
        for vid, rec in scenes.items():
            objects = rec["objects"]
            for e in rec["expressions"].values():
                ref = objects[e["obj_id"]]
                atoms = [tuple(a) for a in e["atoms"]]
                for kind, value, *rest in atoms:
                    if kind == "category":
                        assert ref["category"] == value
                    if kind == "size":
                        assert ref["size"] == value
                    if kind == "colour":
                        meta = _json(dataset / split / "meta.json")
                        name = meta["videos"][vid]["objects"][e["obj_id"]]["frames"][0]
                        rgb = np.array(Image.open(dataset / split / "JPEGImages" / vid / f"{name}.jpg"), float)
                        m = np.array(Image.open(dataset / split / "Annotations" / vid / f"{name}.png")) == int(e["obj_id"])
                        m &= ~(np.roll(m, 1, 0) ^ m) & ~(np.roll(m, 1, 1) ^ m)  # drop edge pixels
                        if m.sum() >= 4:
                            mean = rgb[m].mean(0)
                            nearest = min(COLOURS, key=lambda c: np.linalg.norm(mean - COLOURS[c]))
                            assert nearest == value, (vid, e["exp"], mean)
                            checked["colour"] += 1
                    if kind == "motion" and value in DIRECTIONS:
                        d = np.array(DIRECTIONS[value])
                        areas, cents = _centroids(dataset, split, vid, int(e["obj_id"]))
                        full = np.nonzero(areas >= 0.9 * areas.max())[0]
                        if len(full) >= 2:  # fully visible frames: the mask centroid moves along d
                            assert (cents[full[-1]] - cents[full[0]]) @ d > 0, (vid, e["exp"])
                        along = np.diff(np.array(ref["centres_xy"]), axis=0) @ d  # the trajectory too
                        assert (along > MOVE_MIN).mean() >= 0.8, (vid, e["exp"])
                        checked["motion"] += 1
                named = {a[0] for a in atoms}
                if named <= {"category", "colour", "size"}:  # no other object has the named attributes
                    matches = [oid for oid, o in objects.items() if all(o[k] == ref[k] for k in named)]
                    assert matches == [e["obj_id"]], (vid, e["exp"])
                    checked["appearance_only"] += 1
    assert all(v > 0 for v in checked.values()), checked


def test_vocabulary_is_safe_under_the_horizontal_flip():
    words = grammar_vocabulary()
    assert {"left", "right", "the", "circle", "moving"} <= set(words)
    assert [w for w in words if ("left" in w or "right" in w) and w not in ("left", "right")] == []
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)


# ------------------------------------------------------------------------------------------------
# Kind labels
# ------------------------------------------------------------------------------------------------
def test_kind_labels_cover_every_kind_and_match_the_expressions(dataset):
    labels = read_expression_kinds(dataset / "expression_kinds.json")
    n_videos = 0
    for split in ("train", "valid", "test"):
        exps = _json(dataset / "meta_expressions" / split / "meta_expressions.json")["videos"]
        meta = _json(dataset / split / "meta.json")["videos"]
        per_split = read_expression_kinds(dataset / "meta_expressions" / split / "expression_kinds.json")
        assert list(per_split) == list(exps)
        for vid, entry in exps.items():
            n_videos += 1
            assert list(labels[vid]) == list(entry["expressions"]) and labels[vid] == per_split[vid]
            cats = [o["category"] for o in meta[vid]["objects"].values()]
            for exp_id, e in entry["expressions"].items():
                ref_cat = meta[vid]["objects"][e["obj_id"]]["category"]
                assert labels[vid][exp_id].trivial == (cats.count(ref_cat) == 1)
    assert len(labels) == n_videos
    groups = expression_groups(labels)
    assert set(KINDS) <= set(groups), sorted(groups)
    assert {"trivial", "non_trivial", "only_motion"} <= set(groups)
    assert len(groups["all"]) == len(groups["trivial"]) + len(groups["non_trivial"])


def test_kind_label_reader_rejects_bad_files(tmp_path):
    path = tmp_path / "kinds.json"
    path.write_text(json.dumps({"v": {"0": {"kinds": ["colour"], "trivial": False}}}))
    with pytest.raises(DatasetFormatError, match="unknown kind.*colour"):
        read_expression_kinds(path)
    path.write_text(json.dumps({"v": {"0": {"kinds": ["motion"], "trivial": "no"}}}))
    with pytest.raises(DatasetFormatError, match="trivial"):
        read_expression_kinds(path)
    path.write_text(json.dumps({"v": {"0": {"kinds": ["motion", "category"], "trivial": True}}}))
    label = read_expression_kinds(path)["v"]["0"]
    assert label.kinds == ("category", "motion") and label.trivial and label.only is None
    with pytest.raises(DatasetFormatError, match="not found"):
        read_expression_kinds(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------
# Entering / leaving objects
# ------------------------------------------------------------------------------------------------
def test_entering_and_leaving_objects_are_absent_in_some_frames(dataset):
    found = {"enter": 0, "leave": 0}
    for split in ("train", "valid", "test"):
        scenes = _json(dataset / split / "scenes.json")["videos"]
        meta = _json(dataset / split / "meta.json")["videos"]
        for vid, rec in scenes.items():
            frames = [f"{5 * t:05d}" for t in range(CONFIG.num_frames)]
            for oid, obj in rec["objects"].items():
                if obj["motion"] not in found:
                    continue
                absent = frames[0] if obj["motion"] == "enter" else frames[-1]
                png = np.array(Image.open(dataset / split / "Annotations" / vid / f"{absent}.png"))
                assert not (png == int(oid)).any()
                assert absent not in meta[vid]["objects"][oid]["frames"]
                assert meta[vid]["objects"][oid]["frames"]  # but visible elsewhere
                found[obj["motion"]] += 1
    assert all(found.values()), found


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def test_synth_command(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--seed", "1", "--videos", "1", "--split", "test", "--quiet",
            "--frames", "6", "--height", "48", "--width", "64"]
    assert cli_main(args) == 0
    assert (out / "test" / "meta.json").is_file() and not (out / "train").exists()
    assert "test:" in capsys.readouterr().out
    assert cli_main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli_main(args + ["--overwrite"]) == 0
    assert cli_main(["synth", "--out", str(out), "--videos", "1", "--frames", "2"]) == 2
