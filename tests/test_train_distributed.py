"""Two CPU processes (gloo, ``torchrun --nproc_per_node 2``) train like one process with the same global batch.

The two processes run ``tests/toy.py`` (the stand-in model and clips) under ``torchrun``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import referformer
from referformer.engine.train_log import read_log
from referformer.engine.trainer import Trainer
from toy import ToyClips, ToyReferModel, toy_collate, toy_recipe

TORCHRUN = Path(sys.executable).with_name("torchrun")
TOY_SCRIPT = Path(__file__).with_name("toy.py")
LOSS_COLUMNS = ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_mask_0", "grad_norm")


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_process_gloo_run_matches_single_process(tmp_path):
    steps = 3
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    checkout = Path(referformer.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():  # testing a source tree: the workers import it too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH")) if p)
    command = [
        torchrun, "--standalone", "--nproc_per_node", "2", str(TOY_SCRIPT),
        "--out", str(tmp_path / "two"), "--batch-size", "1", "--max-steps", str(steps),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    config = toy_recipe(device="cpu", precision="fp32", batch_size=2, max_steps=steps, num_workers=0)
    single = Trainer(
        config,
        lambda: ToyReferModel(num_layers=config.num_decoder_layers),
        ToyClips(num_clips=8, num_frames=config.num_frames),
        tmp_path / "one",
        toy_collate,
        show_progress=False,
    )
    single.fit()

    two = read_log(tmp_path / "two" / "log.csv")
    one = read_log(tmp_path / "one" / "log.csv")
    assert len(two) == len(one) == steps
    for row_two, row_one in zip(two, one):
        for column in LOSS_COLUMNS:
            assert float(row_two[column]) == pytest.approx(float(row_one[column]), rel=1e-5, abs=1e-7), column
    # the step after the first update depends on the all-reduced gradients: it matches too
    assert float(two[1]["loss"]) != float(two[0]["loss"])
