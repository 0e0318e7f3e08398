"""The tiny real ReferFormer overfits one clip through the Trainer: loss falls >= 10x, mask IoU > 0.9.

About 20 CPU-seconds with one thread (two threads on a busy 2-core machine oversubscribe it and
take ten times longer, so the test pins one).
"""

from __future__ import annotations

import torch

from referformer.engine.train_log import read_log
from referformer.engine.trainer import Trainer
from toy import ToyClips, toy_recipe


class RepeatedClip(torch.utils.data.Dataset):
    def __init__(self, sample, length):
        self.sample, self.length = sample, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.sample


def collate(samples):
    frames = torch.stack([frames for frames, _ in samples])
    input_ids = torch.tensor([[0, 10, 20, 30, 2]] * len(samples))
    return {"frames": frames, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, [t for _, t in samples]


def test_tiny_referformer_overfits_one_clip(tmp_path, one_thread):
    from referformer.models import build_model
    from referformer.presets import tiny_config

    model_config = tiny_config().replace(dropout=0.0)
    steps = 60
    config = toy_recipe(
        num_decoder_layers=model_config.dec_layers, batch_size=1, epochs=1, num_workers=0, precision="fp32",
        **{"optimizer.lr": 1e-3, "optimizer.lr_backbone": 1e-3},
    )
    clip = ToyClips(num_clips=1, num_frames=2, size=(64, 64))[0]
    trainer = Trainer(config, lambda: build_model(model_config), RepeatedClip(clip, steps), tmp_path, collate,
                      show_progress=False)
    trainer.fit()
    losses = [float(row["loss"]) for row in read_log(tmp_path / "log.csv")]
    assert len(losses) == steps
    assert losses[0] / min(losses[-5:]) >= 10

    model = trainer.model.eval()
    inputs, targets = collate([clip])
    inputs = {k: v.to(trainer.device) for k, v in inputs.items()}
    targets = [{k: v.to(trainer.device) for k, v in targets[0].items()}]
    with torch.no_grad():
        outputs = model(**inputs)
    query = trainer.criterion.matcher({k: v for k, v in outputs.items() if k != "aux_outputs"}, targets)[0][0].item()
    predicted = outputs["pred_masks"][0, :, query] > 0
    target = targets[0]["masks"][:, 2::4, 2::4]
    iou = (predicted & target).sum() / (predicted | target).sum()
    assert iou > 0.9
