"""Named model configurations: one per published checkpoint of the official model zoo, generic
``<backbone>-default`` / ``<backbone>-release`` configs, a tiny config for tests, and RefVOS
(``refvos-r101``, the paper's model; ``refvos-tiny`` for tests; see docs/refvos.md).

All model-zoo checkpoints use the ``release`` architecture (box refinement, 1 class, frozen text
encoder). File names are those of the official model zoo as far as known; they are hints (used by
``referformer convert`` to suggest a preset), not requirements.
"""

from __future__ import annotations

from dataclasses import dataclass

from referformer.config import (KNOWN_BACKBONES, SWIN_BACKBONES, VIDEO_SWIN_BACKBONES, BertTextConfig,
                                ModelConfig, RefVOSConfig, TextEncoderConfig)
from referformer.errors import UserError


@dataclass(frozen=True)
class Preset:
    """name; config (``ModelConfig``, or ``RefVOSConfig`` for the ``refvos-*`` presets); description;
    dataset the weights were trained for; official_file: expected file name of the official
    checkpoint (None for generic configs)."""

    name: str
    config: ModelConfig | RefVOSConfig
    description: str
    dataset: str = ""
    official_file: str | None = None


def default_config(backbone: str) -> ModelConfig:
    """Official ``opts.py`` defaults (ytvos: 65 classes, no box refinement)."""
    return ModelConfig(backbone=backbone, num_classes=65, with_box_refine=False, freeze_text_encoder=False)


def release_config(backbone: str) -> ModelConfig:
    """The architecture of every published checkpoint (``--with_box_refine --binary --freeze_text_encoder``)."""
    return ModelConfig(backbone=backbone, num_classes=1, with_box_refine=True, freeze_text_encoder=True)


def tiny_config(backbone: str = "resnet18") -> ModelConfig:
    """A small random model for tests and examples (seconds on a CPU; not the published architecture)."""
    return ModelConfig(
        backbone=backbone, hidden_dim=32, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64,
        enc_n_points=2, dec_n_points=2, num_queries=3, num_classes=1, with_box_refine=True, mask_dim=16,
        dynamic_mask_channels=4, freeze_text_encoder=True,
        text_encoder=TextEncoderConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=66))


_SHORT = {"resnet50": "r50", "resnet101": "r101", "swin_t_p4w7": "swin-t", "swin_s_p4w7": "swin-s",
          "swin_b_p4w7": "swin-b", "swin_l_p4w7": "swin-l", "video_swin_t_p4w7": "video-swin-t",
          "video_swin_s_p4w7": "video-swin-s", "video_swin_b_p4w7": "video-swin-b"}
_LONG = {"resnet50": "ResNet-50", "resnet101": "ResNet-101", "swin_t_p4w7": "Swin-T", "swin_s_p4w7": "Swin-S",
         "swin_b_p4w7": "Swin-B", "swin_l_p4w7": "Swin-L", "video_swin_t_p4w7": "Video-Swin-T",
         "video_swin_s_p4w7": "Video-Swin-S", "video_swin_b_p4w7": "Video-Swin-B"}
_FILE = {"resnet50": "r50", "resnet101": "r101", "swin_t_p4w7": "swin_tiny", "swin_s_p4w7": "swin_small",
         "swin_b_p4w7": "swin_base", "swin_l_p4w7": "swin_large", "video_swin_t_p4w7": "video_swin_tiny",
         "video_swin_s_p4w7": "video_swin_small", "video_swin_b_p4w7": "video_swin_base"}

# The official model zoo (ReferFormer README): which backbones were published for what.
_YTVOS = ("resnet50", "resnet101", "swin_t_p4w7", "swin_s_p4w7", "swin_b_p4w7", "swin_l_p4w7",
          "video_swin_t_p4w7", "video_swin_s_p4w7", "video_swin_b_p4w7")
_YTVOS_JOINT = ("resnet50", "resnet101", "swin_t_p4w7", "swin_l_p4w7", "video_swin_b_p4w7")
_REFCOCO_PRETRAIN = ("resnet50", "resnet101", "swin_t_p4w7", "swin_l_p4w7")
_A2D = ("video_swin_t_p4w7", "video_swin_s_p4w7", "video_swin_b_p4w7")


def refvos_config() -> RefVOSConfig:
    """RefVOS as in the paper: DeepLabv3 ResNet-101, output stride 8, ASPP 12/24/36, bert-base-uncased."""
    return RefVOSConfig()


def refvos_tiny_config() -> RefVOSConfig:
    """A small random RefVOS for tests and examples (ResNet-18 at stride 8, 16 ASPP channels, 2-layer
    BERT of width 32 over 600 tokens: room for the synthetic tokenizer's 525, RoBERTa-style pad id 1);
    not the published architecture."""
    return RefVOSConfig(backbone="resnet18", atrous_rates=(2, 4, 6), aspp_channels=16,
                        text_encoder=BertTextConfig(vocab_size=600, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    max_position_embeddings=64, pad_token_id=1))


def _build_presets() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}

    def add(p: Preset) -> None:
        presets[p.name] = p

    for bb in _YTVOS:
        add(Preset(f"ytvos-{_SHORT[bb]}", release_config(bb),
                   f"Ref-YouTube-VOS, {_LONG[bb]}, RefCOCO/+/g pretraining then Ref-YouTube-VOS "
                   "(also the Ref-DAVIS17 model)", "ref-youtube-vos", f"ytvos_{_FILE[bb]}.pth"))
    for bb in _YTVOS_JOINT:
        add(Preset(f"ytvos-joint-{_SHORT[bb]}", release_config(bb),
                   f"Ref-YouTube-VOS, {_LONG[bb]}, joint training with RefCOCO/+/g", "ref-youtube-vos",
                   f"ytvos_joint_{_FILE[bb]}.pth"))
    for bb in _REFCOCO_PRETRAIN:
        add(Preset(f"refcoco-pretrain-{_SHORT[bb]}", release_config(bb),
                   f"{_LONG[bb]} pretrained on RefCOCO/+/g (image, the initialisation of the video models)",
                   "refcoco", f"{_FILE[bb]}_pretrained.pth"))
    for bb in _A2D:
        add(Preset(f"a2d-{_SHORT[bb]}", release_config(bb),
                   f"A2D-Sentences (and JHMDB-Sentences evaluation), {_LONG[bb]}, RefCOCO/+/g pretraining",
                   "a2d-sentences", f"a2d_{_FILE[bb]}.pth"))
    for bb in ("resnet50", "resnet101") + SWIN_BACKBONES + VIDEO_SWIN_BACKBONES:
        add(Preset(f"{bb}-release", release_config(bb),
                   f"{_LONG[bb]}, architecture of the published checkpoints (box refinement, 1 class)"))
        add(Preset(f"{bb}-default", default_config(bb),
                   f"{_LONG[bb]}, official opts.py defaults (65 classes, no box refinement)"))
    add(Preset("tiny", tiny_config(), "tiny random ResNet-18 model for tests and examples (no checkpoint)"))
    add(Preset("refvos-r101", refvos_config(),
               "RefVOS (Bellver et al.): DeepLabv3 ResNet-101 OS 8 + bert-base-uncased, frame by frame "
               "(no official checkpoint converter; train it with the refvos-* recipes)"))
    add(Preset("refvos-tiny", refvos_tiny_config(), "tiny random RefVOS for tests and examples (no checkpoint)"))
    return presets


PRESETS: dict[str, Preset] = _build_presets()


def list_presets() -> list[Preset]:
    """All presets, in a stable order (model zoo first, then generic configs, then tiny)."""
    return list(PRESETS.values())


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names raise ``UserError`` listing close matches."""
    if name in PRESETS:
        preset = PRESETS[name]
    else:
        import difflib

        close = difflib.get_close_matches(name, list(PRESETS), n=5, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else "run `referformer presets` to list them"
        raise UserError(f"unknown preset {name!r}; {hint}")
    return Preset(preset.name, preset.config.replace(), preset.description, preset.dataset, preset.official_file)


def preset_for_file(filename: str) -> Preset | None:
    """The model-zoo preset whose official file name is ``filename`` (basename), if any."""
    for p in PRESETS.values():
        if p.official_file == filename:
            return p
    return None


assert all(bb in KNOWN_BACKBONES for bb in _SHORT)
