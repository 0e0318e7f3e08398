"""Evaluation drivers on the dataset fixtures: Ref-YouTube-VOS / MeViS zips, Ref-DAVIS17 folders,
A2D / JHMDB results, RefCOCO; a tiny random model for the formats, ground-truth oracles for the
numbers (1.0 where the protocol says so), cross-checked against the protocol scorers."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from referformer.evaluation.davis import evaluate_folders
from referformer.evaluation.drivers import (
    ModelSegmenter,
    QueryPrediction,
    build_eval_dataset,
    run_evaluation,
)
from referformer.evaluation.drivers.davis import merge_objects
from referformer.evaluation.mevis import evaluate_mevis
from referformer.inference.predictor import Predictor
from referformer.models import build_model
from referformer.presets import tiny_config
from referformer.text import load_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(shared_reference: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval_fixtures")
    gen = shared_reference / "formats"
    subprocess.run([sys.executable, str(gen / "make_fixtures.py"), "--out", str(out / "five")],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(gen / "make_mevis_fixture.py"), "--out", str(out / "mevis")],
                   check=True, capture_output=True)
    return {"data": out / "five" / "data", "mevis": out / "mevis" / "mevis",
            "manifest": json.loads((out / "five" / "FIXTURES.json").read_text())}


def make_tokenizer(directory: Path, texts: list[str]) -> Path:
    """A byte-level BPE in the RoBERTa layout (<s> 0, <pad> 1, </s> 2), trained in a second."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.decoder = decoders.ByteLevel()
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> ModelSegmenter:
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    tok_dir = make_tokenizer(tmp_path_factory.mktemp("tok"), ["a person on the left", "the dog in grey", "a car"])
    predictor = Predictor(model, load_tokenizer(tok_dir), short_side=96, sentence_batch_size=3)
    return ModelSegmenter(predictor)  # small: formats only


class VideoOracle:
    """Returns the ground truth of each expression (probability 1 inside, 0 outside)."""

    def __init__(self, dataset):
        self.by_key = {(e.video_id, e.exp_id): e for e in dataset.expressions}
        self.dataset = dataset

    def __call__(self, request):
        for exp_id in request.exp_ids:
            e = self.by_key[(request.video_id, exp_id)]
            gt = self.dataset.gt_masks(e)
            keep = [e.frame_names.index(n) for n in request.frame_names]
            yield torch.from_numpy(gt[keep].astype(np.float32))


class QueryOracle:
    """Every sample: query 0 = the ground-truth mask (score 0.9), query 1 = empty (score 0.2)."""

    def __init__(self, gt_json: Path):
        coco = json.loads(gt_json.read_text())
        self.masks = {a["image_id"]: mask_utils.decode(a["segmentation"]).astype(bool) for a in coco["annotations"]}

    def queries(self, request):
        out = []
        for sample in request.sample_ids:
            gt = torch.from_numpy(self.masks[sample])
            out.append(QueryPrediction(torch.stack([gt, torch.zeros_like(gt)]), torch.tensor([0.9, 0.2])))
        return out


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


# ------------------------------------------------------------------------------------------------
# Ref-YouTube-VOS submission zip
# ------------------------------------------------------------------------------------------------
def test_ytvos_submission_zip(data, tiny, tmp_path):
    root = data["data"] / "ref-youtube-vos"
    report = run_evaluation("ytvos", root, "valid", tiny, tmp_path, progress=False)
    meta = json.loads((root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    valid = data["manifest"]["datasets"]["ytvos"]["valid_videos"]  # valid json minus test json
    expected = {f"Annotations/{v}/{e}/{f}.png" for v in valid for e in meta[v]["expressions"]
                for f in meta[v]["frames"]}
    names = _zip_names(tmp_path / "submission.zip")
    assert len(names) == len(set(names)) and set(names) == expected
    assert report["outputs"]["zip_entries"] == len(expected) and report["num_videos"] == len(valid)
    with zipfile.ZipFile(tmp_path / "submission.zip") as archive:
        for name in names[:6]:
            video, _, frame = name.split("/")[1:]
            with archive.open(name) as f:
                image = Image.open(f)
                image.load()
            with Image.open(root / "valid" / "JPEGImages" / video / frame.replace(".png", ".jpg")) as jpg:
                assert image.size == jpg.size
            assert image.mode == "L" and set(np.unique(np.array(image))) <= {0, 255}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["dataset"] == "ytvos" and saved["split"] == "valid" and len(saved["per_video"]) == len(valid)


# ------------------------------------------------------------------------------------------------
# MeViS: zip at the root, valid_u scores (oracle = 1.0, equal to the protocol scorer)
# ------------------------------------------------------------------------------------------------
def test_mevis_valid_u_oracle_and_protocol_agree(data, tmp_path):
    dataset = build_eval_dataset("mevis", data["mevis"], "valid_u")
    report = run_evaluation("mevis", data["mevis"], "valid_u", VideoOracle(dataset), tmp_path, progress=False)
    assert report["J&F"] == 1.0 and report["J"] == 1.0 and report["F"] == 1.0
    assert len(report["per_expression"]) == len(dataset.expressions)
    protocol = evaluate_mevis(data["mevis"] / "valid_u", tmp_path / "Annotations", progress=False)
    assert protocol.global_metrics() == {k: report[k] for k in ("J&F", "J", "F")}
    names = _zip_names(tmp_path / "submission.zip")
    assert all(not n.startswith("Annotations/") for n in names)
    assert len(names) == sum(len(e.frame_names) for e in dataset.expressions)


def test_mevis_tiny_model_scores_equal_protocol(data, tiny, tmp_path):
    report = run_evaluation("mevis", data["mevis"], "valid_u", tiny, tmp_path, progress=False)
    protocol = evaluate_mevis(data["mevis"] / "valid_u", tmp_path / "Annotations", progress=False).to_dict()
    assert report["J&F"] == pytest.approx(protocol["J&F"], abs=1e-12)
    got = {r["video"] + "_" + r["expression"]: (r["J"], r["F"]) for r in report["per_expression"]}
    assert got == {r["name"]: (r["J"], r["F"]) for r in protocol["per_expression"]}


def test_mevis_valid_zip_layout(data, tiny, tmp_path):
    report = run_evaluation("mevis", data["mevis"], "valid", tiny, tmp_path, progress=False)
    meta = json.loads((data["mevis"] / "valid" / "meta_expressions.json").read_text())["videos"]
    expected = {f"{v}/{e}/{f}.png" for v, entry in meta.items() for e in entry["expressions"] for f in entry["frames"]}
    assert set(_zip_names(tmp_path / "submission.zip")) == expected
    assert "J&F" not in report  # valid has no masks: the server scores it


# ------------------------------------------------------------------------------------------------
# Ref-DAVIS17: anno_0..3 palette folders, per-annotator J&F and their mean
# ------------------------------------------------------------------------------------------------
def test_merge_objects_matches_original_argmax():
    label = np.zeros((1, 1, 4), np.uint8)
    best = np.full((1, 1, 4), 0.1, np.float32)
    merge_objects(label, best, np.array([[[0.4, 0.6, 0.7, 0.9]]]), 1)  # 0.4 -> 0: background wins
    merge_objects(label, best, np.array([[[0.8, 0.6, 0.9, 0.5]]]), 2)  # tie at 0.6 keeps object 1
    assert label.tolist() == [[[2, 1, 2, 1]]]
    scores = torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.4, 0.6, 0.7, 0.9], [0.8, 0.6, 0.9, 0.5]])[:, None, None]
    scores[1:][scores[1:] < 0.5] = 0  # the original: zero < 0.5, prepend 0.1, argmax
    scores[0] = 0.1
    assert torch.argmax(scores, 0).tolist() == label.tolist()


def test_davis_folders_and_scores(data, tiny, tmp_path):
    root = data["data"] / "ref-davis"
    dataset = build_eval_dataset("davis", root, "valid")
    report = run_evaluation("davis", root, "valid", tiny, tmp_path, progress=False)
    for anno in range(4):
        folder = tmp_path / f"anno_{anno}"
        for video, exps in dataset.videos().items():
            pngs = sorted((folder / video).glob("*.png"))
            assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(len(exps[0].frame_names))]
            with Image.open(pngs[0]) as image:
                assert image.mode == "P" and image.size == Image.open(exps[0].frame_paths[0]).size
                assert int(np.array(image).max()) <= len(exps) // 4
        protocol = evaluate_folders(root / "valid" / "Annotations", folder, progress=False).global_metrics()
        assert report[f"anno_{anno}"]["J&F-Mean"] == pytest.approx(protocol["J&F-Mean"], abs=1e-12)
    assert report["J&F"] == pytest.approx(np.mean([report[f"anno_{a}"]["J&F-Mean"] for a in range(4)]))


def test_davis_oracle_is_perfect_with_short_clips(data, tmp_path):
    from referformer.evaluation.drivers.davis import evaluate_davis

    root = data["data"] / "ref-davis"
    dataset = build_eval_dataset("davis", root, "valid")
    report = evaluate_davis(dataset, VideoOracle(dataset), tmp_path, root, clip_length=2, progress=False)
    for anno in range(4):
        assert report[f"anno_{anno}"]["J&F-Mean"] == 1.0
    assert report["J&F"] == 1.0


# ------------------------------------------------------------------------------------------------
# A2D / JHMDB: every query as a COCO result; oracle gives 1.0
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,folder,gt", [
    ("a2d", "a2d_sentences", "a2d_sentences_test_annotations_in_coco_format.json"),
    ("jhmdb", "jhmdb_sentences", "jhmdb_sentences_gt_annotations_in_coco_format.json"),
])
def test_a2d_jhmdb_results_and_oracle(data, tiny, tmp_path, name, folder, gt):
    root = data["data"] / folder
    dataset = build_eval_dataset(name, root, "test", max_size=96)  # small frames: formats only
    report = run_evaluation(name, root, "test", tiny, tmp_path / "model", progress=False, dataset=dataset)
    results = json.loads((tmp_path / "model" / "results.json").read_text())
    q = tiny.model.config.num_queries
    assert len(results) == q * len(dataset) == report["num_results"]
    ids = [r["image_id"] for r in results]
    assert all(ids.count(i) == q for i in set(ids))
    for key in ("P@0.5", "P@0.9", "overall_iou", "mean_iou", "mAP", "mAP_best_query"):
        assert key in report
    oracle = run_evaluation(name, root, "test", QueryOracle(root / gt), tmp_path / "oracle", progress=False,
                            dataset=dataset)
    assert [oracle[f"P@{k}"] for k in (0.5, 0.6, 0.7, 0.8, 0.9)] == [1.0] * 5
    assert oracle["overall_iou"] == 1.0 and oracle["mean_iou"] == 1.0
    assert oracle["mAP"] == pytest.approx(1.0) and oracle["mAP_best_query"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# RefCOCO (T = 1)
# ------------------------------------------------------------------------------------------------
def test_refcoco_tiny_and_oracle(data, tiny, tmp_path):
    root = data["data"] / "coco"
    dataset = build_eval_dataset("refcoco", root, "val")
    report = run_evaluation("refcoco", root, "val", tiny, tmp_path / "model", progress=False)
    assert report["num_samples"] == len(dataset) and "REC_P@0.5" in report and "overall_iou" in report

    class Oracle:
        def queries(self, request):
            index = [dataset.images[i]["id"] for i in range(len(dataset))].index(request.sample_ids[0])
            _, target = dataset.read_image_target(index)
            return [QueryPrediction(target["masks"][:1], torch.tensor([1.0]), target["boxes"][:1])]

    oracle = run_evaluation("refcoco", root, "val", Oracle(), tmp_path / "oracle", progress=False)
    assert oracle["REC_P@0.5"] == 1.0 and oracle["P@0.9"] == 1.0 and oracle["overall_iou"] == 1.0


def test_load_segmenter_uses_the_tokenizer_saved_with_the_checkpoint():
    """``evaluate --checkpoint synthetic-tiny`` needs no --tokenizer: the bundled one is found."""
    from referformer.evaluation.drivers.segmenters import load_segmenter

    segmenter = load_segmenter("synthetic-tiny")
    assert len(segmenter.predictor.tokenizer) == segmenter.model.config.text_encoder.vocab_size
    assert segmenter.predictor.tokenizer("the red circle")["input_ids"][0] == 101  # [CLS]: MiniLM's WordPiece
