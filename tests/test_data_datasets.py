"""Dataset readers against the format-exact fixtures of ../shared/reference/formats.

The fixtures are generated once per session in a temporary folder by the reference generators
(make_fixtures.py, make_mevis_fixture.py); expected counts come from their FIXTURES.json and the
deterministic evaluation loaders are compared with what the original loaders returned
(official_val_loader_outputs.{json,npz}).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from referformer.data import build_dataset, collate_clips, convert_davis, convert_refexp
from referformer.data.a2d import build_a2d_sample_lists
from referformer.errors import DatasetFormatError, UserError


@pytest.fixture(scope="session")
def fixtures(shared_reference: Path, tmp_path_factory) -> dict:
    """Generate both fixture trees; returns paths and the two FIXTURES.json manifests."""
    out = tmp_path_factory.mktemp("data_fixtures")
    gen = shared_reference / "formats"
    subprocess.run([sys.executable, str(gen / "make_fixtures.py"), "--out", str(out / "five")],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(gen / "make_mevis_fixture.py"), "--out", str(out / "mevis")],
                   check=True, capture_output=True)
    return {
        "data": out / "five" / "data",
        "manifest": json.loads((out / "five" / "FIXTURES.json").read_text()),
        "mevis": out / "mevis" / "mevis",
        "mevis_manifest": json.loads((out / "mevis" / "FIXTURES.json").read_text()),
        "formats": gen,
    }


pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_all(ds) -> list:
    return [ds[i] for i in range(len(ds))]


def _check_train_sample(frames: torch.Tensor, target: dict, num_frames: int) -> None:
    t = frames.shape[0]
    assert frames.dtype == torch.float32 and frames.shape[1] == 3
    assert target["masks"].dtype == torch.bool and target["masks"].shape[-2:] == frames.shape[-2:]
    assert target["boxes"].shape == (target["masks"].shape[0], 4)
    assert bool((target["valid"] == 1).any()), "training samples always have a visible target"
    assert target["size"].tolist() == list(frames.shape[-2:])
    assert len(target["frame_names"]) == t == num_frames


# ---------------------------------------------------------------------------------------------
# sample counts: every sample of every split loads
# ---------------------------------------------------------------------------------------------
def test_ytvos_train_and_eval_splits(fixtures):
    _seed()
    man = fixtures["manifest"]["datasets"]["ytvos"]
    root = fixtures["data"] / "ref-youtube-vos"
    train = build_dataset("ytvos", root, "train")
    assert len(train) == man["expected_len_YTVOSDataset_train_num_frames_5"]
    for frames, target in _load_all(train):
        _check_train_sample(frames, target, 5)
        assert target["frames_idx"].tolist() == sorted(target["frames_idx"].tolist())
    valid = build_dataset("ytvos", root, "valid")
    assert sorted({e.video_id for e in valid.expressions}) == man["valid_videos"]
    test = build_dataset("ytvos", root, "test")
    assert sorted({e.video_id for e in test.expressions}) == man["test_videos"]
    frames, info = valid[0]
    assert frames.shape[0] == len(info["frame_names"]) and frames.shape[-2:] == (360, 540)
    assert info["frame_names"] == sorted(info["frame_names"]) and info["frame_names"][1] == "00005"


def test_davis_train_valid_and_conversion(fixtures, tmp_path):
    _seed()
    man = fixtures["manifest"]["datasets"]["davis"]
    root = fixtures["data"] / "ref-davis"
    train = build_dataset("davis", root, "train")
    assert len(train) == man["expected_len_DAVIS17Dataset_train_num_frames_5"]
    for frames, target in _load_all(train):
        _check_train_sample(frames, target, 5)
    clips = build_dataset("davis", root, "valid", mode="clips")
    assert len(clips) == man["expected_len_DAVIS17Dataset_valid_num_frames_5"]
    _load_all(clips)
    evals = build_dataset("davis", root, "valid")
    assert sorted(evals.videos()) == sorted(man["val_sequences"])
    gt = evals.gt_masks(evals.expressions[0])
    assert gt.dtype == bool and gt.shape[0] == len(evals.expressions[0].frame_names) and gt.any()
    # conversion of the raw DAVIS + text annotations gives the fixture's converted files
    import shutil
    raw = tmp_path / "ref-davis"
    shutil.copytree(root / "DAVIS", raw / "DAVIS")
    shutil.copytree(root / "davis_text_annotations", raw / "davis_text_annotations")
    convert_davis(raw)
    for rel in ("meta_expressions/train/meta_expressions.json", "meta_expressions/valid/meta_expressions.json",
                "train/meta.json", "valid/meta.json"):
        assert json.loads((raw / rel).read_text()) == json.loads((root / rel).read_text()), rel
    exps = json.loads((raw / "meta_expressions/valid/meta_expressions.json").read_text())["videos"]
    assert exps["dogs-jump"]["expressions"]["10"]["exp"] == "señor in grey"  # latin-1 annotator 2


def test_a2d_train_test_counts_and_sample_lists(fixtures):
    _seed()
    man = fixtures["manifest"]["datasets"]["a2d"]
    root = fixtures["data"] / "a2d_sentences"
    train = build_dataset("a2d", root, "train")
    assert len(train) == man["expected_len_A2DSentencesDataset_train"]
    for frames, target in _load_all(train):
        assert frames.shape[0] == 5 and target["masks"].shape[0] == 1
        assert int(target["frames_idx"][target["valid_indices"][0]]) == int(target["image_id"].split("_f_")[1].split("_")[0]) - 1
        assert bool(target["valid"].all())
    assert len(build_dataset("a2d", root, "test")) == man["expected_len_A2DSentencesDataset_val"]
    lists = build_a2d_sample_lists(root)
    for split in ("train", "test"):
        stored = json.loads((root / f"a2d_sentences_single_frame_{split}_annotations.json").read_text())
        assert lists[split] == stored


def test_refcoco_image_and_pseudo_video(fixtures, tmp_path):
    _seed()
    coco = fixtures["data"] / "coco"
    per = fixtures["manifest"]["datasets"]["refcoco"]["datasets"]
    for name, info in per.items():
        for split, count in info["samples_per_split"].items():
            ds = build_dataset(name, coco, split)
            assert len(ds) == count
            for frames, target in _load_all(ds):
                assert frames.shape[0] == 1 and target["masks"].shape[0] == 1
    clips = build_dataset("refcoco", coco, "train", num_frames=5)
    for frames, target in _load_all(clips):
        _check_train_sample(frames, target, 5)
    joint = build_dataset("concat", fixtures["data"], "train")
    assert [len(d) for d in joint.datasets] == [3, 3, 3, 9]  # official joint: 18 samples
    batch = collate_clips([joint[0], joint[len(joint) - 1]])
    assert batch.frames.shape[0] == 2 and batch.frames.shape[-1] % 32 == 0
    # converter: same json as the fixture's converted files
    import shutil
    shutil.copytree(coco / "refcoco", tmp_path / "refcoco")
    convert_refexp(tmp_path, "refcoco")
    for split in per["refcoco"]["samples_per_split"]:
        f = f"instances_refcoco_{split}.json"
        assert json.loads((tmp_path / "refcoco" / f).read_text()) == json.loads((coco / "refcoco" / f).read_text())


# ---------------------------------------------------------------------------------------------
# deterministic evaluation loaders == the original's outputs
# ---------------------------------------------------------------------------------------------
def test_a2d_jhmdb_eval_loaders_equal_official(fixtures):
    ref = json.loads((fixtures["formats"] / "official_val_loader_outputs.json").read_text())
    npz = np.load(fixtures["formats"] / "official_val_loader_outputs.npz")
    data = fixtures["data"]
    datasets = {"a2d": build_dataset("a2d", data / "a2d_sentences", "test"),
                "jhmdb": build_dataset("jhmdb", data / "jhmdb_sentences", "test")}
    assert len(datasets["jhmdb"]) == fixtures["manifest"]["datasets"]["jhmdb"]["expected_len_JHMDBSentencesDataset_val"]
    for entry in ref:
        frames, target = datasets[entry["dataset"]][int(entry["key"].split("/")[1])]
        shape = entry["masks_shape"]
        masks = np.unpackbits(npz[entry["key"] + "/masks"])[: int(np.prod(shape))].reshape(shape).astype(bool)
        assert target["image_id"] == entry["image_id"]
        assert target["caption"] == entry["caption"]
        assert target["frames_idx"].tolist() == entry["frames_idx"]
        assert target["valid_indices"].tolist() == entry["valid_indices"]
        assert target["valid"].tolist() == entry["valid"]
        assert target["size"].tolist() == entry["size"] and target["orig_size"].tolist() == entry["orig_size"]
        np.testing.assert_array_equal(target["boxes"].numpy(), np.asarray(entry["boxes_cxcywh_normalized"], np.float32))
        np.testing.assert_array_equal(target["masks"].numpy(), masks)
        assert list(frames.shape) == entry["imgs_shape"]
        # The A2D clips are mp4s the generator encodes with PyAV's libx264: pixels equal the
        # official loader's only on the encoder that made the reference (the test extra pins it).
        why = f"{entry['key']}: PyAV {av.__version__} (the reference fixtures were encoded with 16.1.0)"
        np.testing.assert_allclose(frames.mean(dim=(0, 2, 3)).numpy(), entry["imgs_channel_mean"], atol=1e-6, err_msg=why)
        np.testing.assert_allclose(frames.std(dim=(0, 2, 3)).numpy(), entry["imgs_channel_std"], atol=1e-6, err_msg=why)


# ---------------------------------------------------------------------------------------------
# MeViS
# ---------------------------------------------------------------------------------------------
def test_mevis_union_masks_and_counts(fixtures):
    _seed()
    root, man = fixtures["mevis"], fixtures["mevis_manifest"]["splits"]
    for split in ("train", "valid_u"):
        clips = build_dataset("mevis", root, split, mode="clips", augment=False)
        assert len(clips) == man[split]["referformer_style_len"]["num_frames=5"]
        evals = build_dataset("mevis", root, split, mode="eval")
        assert len(evals) == man[split]["num_expressions"]
        for e in evals.expressions:
            info = man[split]["videos"][e.video_id]["expressions"][e.exp_id]
            assert e.caption == info["caption"]
            union = evals.gt_masks(e)
            assert union.sum(axis=(1, 2)).tolist() == info["union_area"]
            assert [t for t in range(len(union)) if not union[t].any()] == info["empty_union_frames"]
            # the clip reader gives the same union and the inclusive union box
            for t, box in enumerate(info["union_bbox_xyxy"]):
                ds_idx = next(i for i, (k, _) in enumerate(clips.metas) if clips.expressions[k].expression == e)
                _, target = clips.read_clip(ds_idx, [t])
                assert np.array_equal(target["masks"][0].numpy(), union[t])
                expected = [0.0, 0.0, 0.0, 0.0] if box is None else [float(v) for v in box]
                assert target["boxes"][0].tolist() == expected and int(target["valid"][0]) == (box is not None)
    train = build_dataset("mevis", root, "train")
    for frames, target in _load_all(train):
        _check_train_sample(frames, target, 5)
    valid = build_dataset("mevis", root, "valid")
    assert len(valid) == man["valid"]["num_expressions"]
    frames, info = valid[0]
    assert frames.shape[0] == len(info["frame_names"])
    with pytest.raises(UserError):
        build_dataset("mevis", root, "valid", mode="clips")


# ---------------------------------------------------------------------------------------------
# invariants over many random augmentations of real fixture samples
# ---------------------------------------------------------------------------------------------
def test_augmented_ytvos_invariants(fixtures):
    root = fixtures["data"] / "ref-youtube-vos"
    ds = build_dataset("ytvos", root, "train", swap_whole_words=True)  # our option; the default is the original's
    ds.transforms.transforms[-1] = _KeepPixels()  # keep xyxy pixel boxes to compare with the masks
    captions = {(ce.expression.video_id, ce.expression.exp_id): ce.expression.caption for ce in ds.expressions}
    flips = 0
    for seed in range(24):
        _seed(seed)
        frames, target = ds[seed % len(ds)]
        masks, boxes, valid = target["masks"], target["boxes"], target["valid"]
        assert bool((valid == 1).any())
        assert masks.shape[0] == boxes.shape[0] == valid.shape[0] == frames.shape[0]
        assert masks.shape[-2:] == frames.shape[-2:]
        # boxes are the original's inclusive extents scaled; they stay within one source pixel
        # (at most 600 / 64 * h / 384 output pixels) of the tight box of the resized mask
        tol = 0.025 * int(target["size"][0]) + 1
        for m, b, v in zip(masks, boxes, valid):
            if v:
                ys, xs = torch.nonzero(m, as_tuple=True)
                assert len(xs) > 0, "a visible box has mask pixels"
                tight = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
                assert torch.all((b - tight).abs() <= tol), (b, tight)
            else:
                assert bool((b[2:] <= b[:2]).any()), "an invalid frame has a degenerate box"
        original = captions[(target["video_id"], target["exp_id"])]
        if target["caption"] != original:
            flips += 1
            swapped = [{"left": "right", "right": "left"}.get(w, w) for w in original.split()]
            assert target["caption"].split() == swapped
    assert flips > 0
    # the default is the original's substring swap: "leftward" becomes "rightward"
    _seed(0)
    default = build_dataset("ytvos", root, "train")
    assert default.transforms.transforms[0].swap_whole_words is False


class _KeepPixels:
    def __call__(self, frames, target):
        from torchvision.transforms.v2.functional import pil_to_tensor
        return torch.stack([pil_to_tensor(f) for f in frames]), target


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_missing_and_corrupt_files_are_reported(fixtures, tmp_path):
    with pytest.raises(DatasetFormatError, match="not found"):
        build_dataset("ytvos", tmp_path / "nowhere", "train")
    import shutil
    root = tmp_path / "ytvos"
    shutil.copytree(fixtures["data"] / "ref-youtube-vos", root)
    meta = root / "meta_expressions" / "train" / "meta_expressions.json"
    meta.write_text("{not json")
    with pytest.raises(DatasetFormatError, match=str(meta).replace("+", r"\+")):
        build_dataset("ytvos", root, "train")
    shutil.copy(fixtures["data"] / "ref-youtube-vos" / "meta_expressions" / "train" / "meta_expressions.json", meta)
    ds = build_dataset("ytvos", root, "train", augment=False)
    bad = root / "train" / "JPEGImages" / "0a1b2c3d4e" / "00000.jpg"
    bad.write_bytes(b"not a jpeg")
    _seed()
    with pytest.raises(DatasetFormatError, match="00000.jpg"):
        for i in range(len(ds)):
            ds[i]
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataset("kinetics", root, "train")
    with pytest.raises(UserError, match="split"):
        build_dataset("ytvos", root, "val")


def test_data_loader_workers_are_seeded_and_reproducible(fixtures):
    from referformer.data import make_data_loader

    ds = build_dataset("mevis", fixtures["mevis"], "train")
    runs = []
    for _ in range(2):
        loader = make_data_loader(ds, batch_size=2, num_workers=2, seed=3)
        batches = [next(iter(loader)) for _ in range(1)]
        runs.append([(b.frames.shape, [t["frames_idx"].tolist() for t in b.targets], [t["caption"] for t in b.targets])
                     for b in batches])
        b = batches[0]
        assert b.frames.shape[-1] % 32 == 0 and b.padding_mask.shape == (2, *b.frames.shape[1:2], *b.frames.shape[-2:])
    assert runs[0] == runs[1]
    assert ds.mask_reader.masks._data is None, "mask_dict.json is loaded in the workers, not the parent"
