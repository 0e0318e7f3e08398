"""Two CPU processes (gloo, ``torchrun --nproc_per_node 2``) train like one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from referformer.engine.recipes import get_recipe
from referformer.engine.toy import ToyClips, ToyReferModel, toy_collate
from referformer.engine.train_log import read_log
from referformer.engine.trainer import Trainer

TORCHRUN = Path(sys.executable).with_name("torchrun")
LOSS_COLUMNS = ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_mask_0", "grad_norm")


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_process_gloo_run_matches_single_process(tmp_path):
    steps = 3
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        torchrun, "--standalone", "--nproc_per_node", "2", "-m", "referformer", "train",
        "--recipe", "toy", "--out", str(tmp_path / "two"), "--device", "cpu", "--precision", "fp32",
        "--batch-size", "1", "--max-steps", str(steps), "--num-workers", "0", "--no-progress",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    config = get_recipe("toy").replace(device="cpu", precision="fp32", batch_size=2, max_steps=steps, num_workers=0)
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
