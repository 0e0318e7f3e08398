"""The training engine on the tiny stand-in model: optimizer groups, sampler, checkpoints, exact resume."""

from __future__ import annotations

import os

import pytest
import torch

from referformer.data.seeding import SeededDataset
from referformer.engine.checkpointing import load_initial_weights, load_training_checkpoint, save_atomic
from referformer.engine.distributed import ResumableDistributedSampler
from referformer.engine.optim import OptimizerConfig, build_optimizer, build_param_groups, build_scheduler
from referformer.engine.recipes import RECIPES, get_recipe
from referformer.engine.train_log import read_log
from referformer.engine.trainer import resolve_precision
from referformer.errors import CheckpointMismatchError, UserError
from toy import ToyClips, ToyReferModel, toy_recipe, toy_trainer


def toy_config(**changes):
    base = dict(device="cpu", precision="fp32", num_workers=0, checkpoint_every=1)
    base.update(changes)
    return toy_recipe(**base)


def test_param_groups_learning_rates_and_frozen_text_encoder():
    model = ToyReferModel()
    model.text_encoder.requires_grad_(False)
    groups = {g["name"]: g for g in build_param_groups(model, OptimizerConfig())}
    assert {name: g["lr"] for name, g in groups.items()} == {"rest": 1e-4, "backbone": 5e-5, "linear_proj": 1e-4}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("backbone.0") for p in groups["backbone"]["params"])
    assert {names[id(p)] for p in groups["linear_proj"]["params"]} == {"sampling_offsets.weight", "sampling_offsets.bias"}
    trainable = sum(len(g["params"]) for g in groups.values())
    assert trainable == sum(p.requires_grad for p in model.parameters())
    optimizer = build_optimizer(model, OptimizerConfig(lr_linear_proj_mult=0.1, lr_drop=(2,)))
    assert optimizer.defaults["weight_decay"] == 5e-4
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 5e-5, pytest.approx(1e-5)]
    scheduler = build_scheduler(optimizer, OptimizerConfig(lr_drop=(2,)))
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_fused_adamw_gives_the_same_update():
    """Fused AdamW (auto on GPU; forced here on CPU) equals the default implementation up to rounding."""
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = ToyReferModel()
        optimizer = build_optimizer(model, OptimizerConfig(fused=fused, lr=1e-2, lr_backbone=1e-2))
        assert bool(optimizer.defaults["fused"]) == fused
        for step in range(3):
            torch.manual_seed(step)
            optimizer.zero_grad()
            sum((p * torch.randn_like(p)).sum() for p in model.parameters()).backward()
            optimizer.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)
    assert not build_optimizer(ToyReferModel(), OptimizerConfig()).defaults["fused"]  # auto: off on CPU


def test_recipes_hold_the_original_hyperparameters():
    finetune = RECIPES["ytvos-finetune"]
    assert (finetune.epochs, finetune.optimizer.lr_drop, finetune.num_frames) == (6, (3, 5), 5)
    assert (finetune.optimizer.lr, finetune.optimizer.lr_backbone, finetune.optimizer.lr_text_encoder) == (1e-4, 5e-5, 1e-5)
    assert finetune.optimizer.lr_linear_proj_mult == 1.0 and finetune.optimizer.weight_decay == 5e-4
    assert finetune.clip_max_norm == 0.1 and finetune.freeze_text_encoder
    assert RECIPES["refcoco-pretrain"].num_frames == 1
    assert RECIPES["joint"].epochs == 12
    assert RECIPES["a2d-finetune"].num_frames == 5
    assert {"mevis", "ytvos-scratch"} <= set(RECIPES)
    with pytest.raises(UserError, match="unknown recipe"):
        get_recipe("nope")
    changed = finetune.replace(**{"optimizer.lr": 2e-4, "epochs": 1})
    assert changed.optimizer.lr == 2e-4 and changed.epochs == 1 and finetune.optimizer.lr == 1e-4


def test_sampler_shards_like_torch_and_resumes_mid_epoch():
    reference = torch.utils.data.DistributedSampler(range(7), num_replicas=2, rank=1, seed=3)
    reference.set_epoch(4)
    sampler = ResumableDistributedSampler(7, num_replicas=2, rank=1, seed=3)
    sampler.set_epoch(4)
    assert list(sampler) == list(reference)
    sampler.set_position(2)
    assert list(sampler) == list(reference)[2:] and len(sampler) == 2
    single = ResumableDistributedSampler(8, num_replicas=1, rank=0, seed=0)
    pair = [ResumableDistributedSampler(8, num_replicas=2, rank=r, seed=0) for r in range(2)]
    # one process with batch 2 sees the same global batches as two processes with batch 1
    assert [sorted(list(single)[2 * i : 2 * i + 2]) for i in range(4)] == [
        sorted([list(pair[0])[i], list(pair[1])[i]]) for i in range(4)
    ]


def test_seeded_dataset_items_depend_only_on_seed_epoch_index():
    dataset = SeededDataset(ToyClips(num_clips=4), seed=1)
    first = [dataset[i][0] for i in (3, 0, 3)]
    assert torch.equal(first[0], first[2])
    dataset.set_epoch(1)
    flips = [torch.equal(dataset[i][0], SeededDataset(ToyClips(num_clips=4), seed=1)[i][0]) for i in range(4)]
    assert not all(flips)  # another epoch draws other augmentations for some clip


def test_save_atomic_leaves_no_temporary_file(tmp_path):
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "sub" / "x.pth")
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path / "sub") == ["x.pth"]
    with pytest.raises(UserError, match="no training checkpoint"):
        load_training_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="--init"):
        load_training_checkpoint(path)


def test_load_initial_weights_official_layout_and_shape_errors(tmp_path):
    model = ToyReferModel()
    source = ToyReferModel()
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "official.pth")
    missing, unexpected = load_initial_weights(model, tmp_path / "official.pth")
    assert missing == [] and unexpected == []
    assert torch.equal(model.query_embed.weight, source.query_embed.weight)
    torch.save({"model": ToyReferModel(hidden=8).state_dict()}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_initial_weights(model, tmp_path / "other.pth")


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(UserError, match="fp16"):
        resolve_precision("fp16", cpu)


class Killed(Exception):
    pass


def _kill_at(step):
    def callback(progress, row):
        if progress.global_step == step:
            raise Killed

    return callback


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("full")
    toy_trainer(toy_config(), out_dir).fit()
    return out_dir


@pytest.mark.parametrize("kill_step", [3, 5])  # mid-epoch and just after an epoch boundary
def test_resume_after_kill_continues_exactly(tmp_path, uninterrupted_run, kill_step):
    config = toy_config()
    expected = read_log(uninterrupted_run / "log.csv")
    assert len(expected) == 8

    interrupted = toy_trainer(config, tmp_path / "run", callbacks=[_kill_at(kill_step)])
    with pytest.raises(Killed):
        interrupted.fit()
    assert load_training_checkpoint(tmp_path / "run" / "last.pth")["progress"]["global_step"] == kill_step - 1
    resumed = toy_trainer(config, tmp_path / "run", resume=tmp_path / "run")
    resumed.fit()
    assert read_log(tmp_path / "run" / "log.csv") == expected  # identical losses, lr, grad norms; no duplicate rows
    final_full = torch.load(uninterrupted_run / "last.pth", weights_only=False)["model"]
    final_resumed = torch.load(tmp_path / "run" / "last.pth", weights_only=False)["model"]
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)


def test_gradient_accumulation_matches_when_each_micro_batch_is_the_same_size(tmp_path):
    # batch 1 x 2 micro-batches: one optimizer step per 2 clips, losses logged as the mean
    config = toy_config(batch_size=1, grad_accum=2, epochs=1, checkpoint_every=0, max_steps=2)
    trainer = toy_trainer(config, tmp_path / "accum")
    trainer.fit()
    rows = read_log(tmp_path / "accum" / "log.csv")
    assert [int(r["global_step"]) for r in rows] == [1, 2]
    assert trainer.steps_per_epoch == 4
    assert load_training_checkpoint(tmp_path / "accum" / "last.pth")["progress"] == {
        "epoch": 0, "step_in_epoch": 2, "global_step": 2}


def test_activation_checkpointing_and_frozen_text_encoder(tmp_path):
    config = toy_config(activation_checkpointing=True, max_steps=1, checkpoint_every=0)
    trainer = toy_trainer(config, tmp_path / "ac")
    assert trainer.model.activation_checkpointing
    assert not any(p.requires_grad for p in trainer.model.text_encoder.parameters())
    before = trainer.model.text_encoder.weight.clone()
    trainer.fit()
    assert torch.equal(trainer.model.text_encoder.weight, before)


def test_train_command_errors_are_one_line(tmp_path, capsys):
    from referformer.cli import main

    assert main(["train", "--recipe", "ytvos-finetune", "--out", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["train", "--recipe", "synthetic-tiny", "--out", str(tmp_path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path)]) == 2
    assert main(["train", "--list-recipes"]) == 0
    assert "ytvos-finetune" in capsys.readouterr().out


def test_init_from_the_bundled_model_by_name():
    """``--init synthetic-tiny`` resolves the bundled folder and loads every weight of that architecture,
    the text encoder from the shared part the folder names."""
    from referformer.models import build_model
    from referformer.checkpoint.shared import read_shared_part
    from referformer.engine.synthetic_tiny import bundled_model_dir, synthetic_tiny_v2_config

    torch.manual_seed(0)
    model = build_model(synthetic_tiny_v2_config())
    missing, unexpected = load_initial_weights(model, "synthetic-tiny")
    assert missing == [] and unexpected == []
    from safetensors.torch import load_file

    stored = load_file(str(bundled_model_dir() / "model.safetensors"))
    name = next(k for k in stored if k.endswith("class_embed.0.weight"))
    torch.testing.assert_close(model.state_dict()[name], stored[name].float())
    embeddings = read_shared_part("all-MiniLM-L6-v2")["embeddings.word_embeddings.weight"]
    torch.testing.assert_close(model.text_encoder.embeddings.word_embeddings.weight, embeddings.float())


def test_training_checkpoints_load_without_unpickling_code(tmp_path):
    """Our checkpoints hold only tensors and plain values (numpy RNG state included)."""
    from referformer.engine.checkpointing import capture_rng_state

    path = tmp_path / "ckpt.pth"
    save_atomic({"format": 1, "rng": capture_rng_state()}, path)
    torch.load(path, weights_only=True)  # raises if anything needs unpickling
