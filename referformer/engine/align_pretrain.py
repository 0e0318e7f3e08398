"""Our option: a short sentence-object alignment stage before the set-criterion training.

Not in the original, which starts from an ImageNet backbone and a pre-trained RoBERTa. A model
trained from scratch (``synthetic-tiny``) learns to segment objects long before it learns which one a
sentence names (docs/synthetic.md); this stage trains only the backbone, ``input_proj`` and the text
encoder, with the alignment term of :mod:`referformer.engine.alignment` alone (no transformer, no
heads: a step costs a fraction of a training step), and saves ``{"model": state_dict}`` for
``referformer train --init``. From the command line::

    referformer train --stage align --recipe synthetic-tiny --root DATA --tokenizer DIR \\
        --out align.pth --max-steps 1500
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from referformer.data.seeding import seed_everything
from referformer.engine.alignment import require_several_sentences, sentence_object_alignment_loss
from referformer.engine.recipes import TrainConfig
from referformer.engine.trainer import move_to_device
from referformer.errors import UserError
from referformer.models.referformer import alignment_features

__all__ = ["encode_for_alignment", "pretrain_alignment"]


def encode_for_alignment(model: torch.nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` of ``ReferFormer.forward(..., return_features=True)`` without decoding
    (:func:`referformer.models.referformer.alignment_features`)."""
    visual = model.encode_video(inputs["frames"], inputs["padding_mask"], inputs["image_sizes"])
    text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    return alignment_features(visual, text, inputs["clip_index"])


def pretrain_alignment(config: TrainConfig, root: str | Path, out: str | Path, steps: int,
                       tokenizer: str | None = None, num_frames: int | None = None,
                       show_progress: bool = True) -> Path:
    """Train ``config``'s model (its ``model_factory`` from :func:`referformer.engine.wiring.build_components`)
    for ``steps`` steps of ``config.batch_size`` clips x ``config.sentences_per_clip`` sentences on the
    alignment term alone (AdamW with the recipe's lr / weight decay, clipping ``config.clip_max_norm``; on
    ``config.device``, default CUDA when available);
    ``num_frames`` overrides the clip length. Writes ``out`` (``{"model": state_dict, "steps": n}``) and
    ``out`` with suffix ``.csv`` (step, loss). Returns ``out``."""
    from referformer.engine.wiring import build_components

    if config.model != "referformer":
        raise UserError(f"the alignment stage trains a ReferFormer, not {config.model!r}")
    if steps < 1:
        raise UserError(f"the alignment stage needs at least one step (got {steps})")
    require_several_sentences(config.sentences_per_clip)
    if num_frames is not None:
        config = config.replace(num_frames=num_frames)
    seed_everything(config.seed)
    components = build_components(config, root, tokenizer)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = components.model_factory().to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = RandomSampler(components.dataset, replacement=True, num_samples=steps * config.batch_size,
                            generator=generator)
    loader = DataLoader(components.dataset, batch_size=config.batch_size, sampler=sampler,
                        collate_fn=components.collate_fn, num_workers=0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    max_norm = config.clip_max_norm if config.clip_max_norm > 0 else math.inf
    rows = []
    start = time.time()
    bar = tqdm(loader, total=steps, desc="alignment", disable=not show_progress, dynamic_ncols=True)
    for step, (inputs, targets) in enumerate(bar, start=1):
        inputs, targets = move_to_device(inputs, device), move_to_device(targets, device)
        loss = sentence_object_alignment_loss(encode_for_alignment(model, inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        rows.append((step, loss.item()))
        bar.set_postfix(loss=f"{rows[-1][1]:.3f}")
    weights = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    torch.save({"model": weights, "steps": steps, "seconds": round(time.time() - start)}, out)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        csv.writer(f).writerows([("step", "loss_align"), *rows])
    return out
