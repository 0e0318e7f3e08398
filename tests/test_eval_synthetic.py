"""Synthetic benchmark evaluation: per-kind report, the CLI, resume, and a 2-process torchrun that
gives the same numbers as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from referformer.checkpoint import save_pretrained
from referformer.cli import main as cli_main
from referformer.config import TextEncoderConfig
from referformer.evaluation.drivers import build_eval_dataset, run_evaluation
from referformer.evaluation.measures import boundary_f_measure, region_similarity
from referformer.models import build_model
from referformer.presets import tiny_config
from referformer.synthetic import (
    SceneConfig,
    build_synthetic_tokenizer,
    generate_dataset,
    synthetic_text_config,
)
from referformer.synthetic.kinds import expression_groups, read_expression_kinds

CONFIG = SceneConfig(height=48, width=64, num_frames=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, 3, 3, splits=("valid",), config=CONFIG, progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(converted tiny model folder, synthetic tokenizer folder)."""
    base = tmp_path_factory.mktemp("ckpt")
    tok = build_synthetic_tokenizer(base / "tok")
    vocab = synthetic_text_config()["vocab_size"]
    text = TextEncoderConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=40)
    torch.manual_seed(0)
    model = build_model(tiny_config().replace(text_encoder=text)).eval()
    return save_pretrained(model, base / "model"), tok


class Oracle:
    """Ground truth of each expression; counts the videos it was asked for."""

    def __init__(self, dataset, fail_on: str | None = None):
        self.dataset = dataset
        self.by_key = {(e.video_id, e.exp_id): e for e in dataset.expressions}
        self.videos: list[str] = []
        self.fail_on = fail_on

    def __call__(self, request):
        if request.video_id == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        self.videos.append(request.video_id)
        return [torch.from_numpy(self.dataset.gt_masks(self.by_key[(request.video_id, e)]).astype(np.float32))
                for e in request.exp_ids]


class Shifted(Oracle):
    """Ground truth moved 2 px right: imperfect, known scores."""

    def __call__(self, request):
        return [torch.roll(m, 2, dims=-1) for m in super().__call__(request)]


def test_oracle_gives_one_in_every_group(synth, tmp_path):
    dataset = build_eval_dataset("synthetic", synth, "valid")
    report = run_evaluation("synthetic", synth, None, Oracle(dataset), tmp_path, progress=False)
    assert (report["J&F"], report["J"], report["F"]) == (1.0, 1.0, 1.0)
    labels = read_expression_kinds(synth / "meta_expressions" / "valid" / "expression_kinds.json")
    groups = expression_groups(labels)
    assert set(report["groups"]) == set(groups) and {"all", "trivial", "non_trivial"} & set(groups)
    assert all(g["J&F"] == 1.0 and g["count"] == len(groups[name]) for name, g in report["groups"].items())
    assert report["groups"]["all"]["count"] == len(dataset.expressions) and report["unlabelled"] == 0


def test_group_numbers_are_means_of_expression_scores(synth, tmp_path):
    dataset = build_eval_dataset("synthetic", synth, "valid")
    report = run_evaluation("synthetic", synth, "valid", Shifted(dataset), tmp_path, progress=False)
    rows = {(r["video"], r["expression"]): r for r in report["per_expression"]}
    e = dataset.expressions[0]
    gt = dataset.gt_masks(e)
    pred = np.roll(gt, 2, axis=-1)
    assert rows[(e.video_id, e.exp_id)]["J"] == pytest.approx(region_similarity(pred, gt).mean())
    assert rows[(e.video_id, e.exp_id)]["F"] == pytest.approx(boundary_f_measure(pred, gt).mean())
    groups = expression_groups(read_expression_kinds(synth / "expression_kinds.json"))
    for name, keys in groups.items():
        j = np.mean([rows[k]["J"] for k in keys])
        f = np.mean([rows[k]["F"] for k in keys])
        assert report["groups"][name]["J"] == pytest.approx(j) and report["groups"][name]["J&F"] == pytest.approx((j + f) / 2)
    assert report["J"] == pytest.approx(np.mean([r["J"] for r in rows.values()])) and report["J"] < 1.0


def test_resume_skips_finished_videos(synth, tmp_path):
    dataset = build_eval_dataset("synthetic", synth, "valid")
    videos = list(dataset.videos())
    with pytest.raises(KeyboardInterrupt):  # interrupted while on the second video
        run_evaluation("synthetic", synth, "valid", Oracle(dataset, fail_on=videos[1]), tmp_path, progress=False)
    assert sorted(p.stem for p in (tmp_path / "records").glob("*.json")) == [videos[0]]
    assert not (tmp_path / "Annotations" / videos[1]).exists()  # outputs are published whole
    resumed = Oracle(dataset)
    report = run_evaluation("synthetic", synth, "valid", resumed, tmp_path, progress=False)
    assert resumed.videos == videos[1:] and report["J&F"] == 1.0
    again = Oracle(dataset)
    assert run_evaluation("synthetic", synth, "valid", again, tmp_path, progress=False) == report
    assert again.videos == []


def _cli_json(capsys, args: list[str]) -> dict:
    assert cli_main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_synthetic_json(synth, checkpoint, tmp_path, capsys):
    model_dir, tok = checkpoint
    report = _cli_json(capsys, ["evaluate", "--dataset", "synthetic", "--root", str(synth), "--checkpoint",
                                str(model_dir), "--tokenizer", str(tok), "--out", str(tmp_path), "--json",
                                "--device", "cpu", "--no-progress", "--short-side", "48"])
    for key in ("J&F", "J", "F"):
        assert 0.0 <= report[key] <= 1.0
        assert all(0.0 <= g[key] <= 1.0 for g in report["groups"].values())
    groups = expression_groups(read_expression_kinds(synth / "expression_kinds.json"))
    assert set(report["groups"]) == set(groups) and "all" in groups
    assert ("trivial" in groups) + ("non_trivial" in groups) >= 1
    assert report["checkpoint"] == str(model_dir) and (tmp_path / "report.json").is_file()
    # --labels for a real dataset: the same file given explicitly gives the same groups
    again = _cli_json(capsys, ["evaluate", "--dataset", "synthetic", "--root", str(synth), "--checkpoint",
                               str(model_dir), "--tokenizer", str(tok), "--out", str(tmp_path / "b"), "--json",
                               "--device", "cpu", "--no-progress", "--short-side", "48",
                               "--labels", str(synth / "expression_kinds.json")])
    assert again["groups"] == report["groups"]


def test_cli_errors_are_one_line(synth, tmp_path, capsys):
    assert cli_main(["evaluate", "--dataset", "synthetic", "--root", str(synth), "--checkpoint",
                     str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.strip().count("\n") == 0
    assert cli_main(["evaluate", "--dataset", "synthetic", "--root", str(synth), "--split", "train",
                     "--checkpoint", str(tmp_path)]) == 2
    assert "valid" in capsys.readouterr().err  # lists the splits present


def test_torchrun_two_processes_equal_one(synth, checkpoint, tmp_path, capsys):
    model_dir, tok = checkpoint
    common = ["evaluate", "--dataset", "synthetic", "--root", str(synth), "--checkpoint", str(model_dir),
              "--tokenizer", str(tok), "--json", "--device", "cpu", "--no-progress", "--short-side", "48"]
    single = _cli_json(capsys, [*common, "--out", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "referformer", *common, "--out", str(tmp_path / "two")],
                         check=False, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    double = json.loads(two.stdout.strip().splitlines()[-1])
    for report in (single, double):
        report.pop("outputs")
    assert single == double
    records = sorted(p.name for p in (tmp_path / "two" / "records").glob("*.json"))
    assert records == sorted(p.name for p in (tmp_path / "one" / "records").glob("*.json"))
