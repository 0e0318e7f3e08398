"""Image Swin Transformer backbone (``swin_{t,s,b,l}_p4w7``), applied to every frame.

Same function and state-dict keys as the original ``models/swin_transformer.py`` (the
Swin-Transformer-Object-Detection version): patch 4, window 7, maps padded to window multiples,
odd blocks always shifted by 3 (also when one window covers the map), 2x2 patch merging, and one
output LayerNorm per stage (``norm0..norm3``). Small-map numerics: docs/backbones.md.

Keys (with ``backbone.0.`` removed from the official ones): ``body.patch_embed.{proj,norm}``,
``body.layers.{s}.blocks.{b}.{norm1,attn.*,norm2,mlp.fc1,mlp.fc2}``,
``body.layers.{0,1,2}.downsample.{reduction,norm}``, ``body.norm{0..3}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import PatchMerging

from referformer.errors import UserError
from referformer.models.backbones.window_attention import SwinStage, drop_path_rates, init_swin_weights


@dataclass(frozen=True)
class SwinConfig:
    """Hyperparameters of one image Swin variant."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    # Training-only regulariser (inactive in eval); values of the Swin detection configs.
    drop_path_rate: float = 0.2


SWIN_CONFIGS: dict[str, SwinConfig] = {
    "swin_t_p4w7": SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "swin_s_p4w7": SwinConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "swin_b_p4w7": SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
    "swin_l_p4w7": SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.3),
}


class PatchEmbed2d(nn.Module):
    """Non-overlapping patch projection: [B, 3, H, W] -> [B, ceil(H/p), ceil(W/p), C] (channels-last).

    The input is zero-padded at the right/bottom to a multiple of the patch size first.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_w, pad_h = (-width) % self.patch_size, (-height) % self.patch_size
        if pad_w or pad_h:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    """The original ``SwinTransformer`` (all four stages as outputs, each with its LayerNorm)."""

    def __init__(self, config: SwinConfig, use_checkpoint: bool = False) -> None:
        super().__init__()
        num_stages = len(config.depths)
        self.num_features = [config.embed_dim * 2**i for i in range(num_stages)]
        self.patch_embed = PatchEmbed2d(config.patch_size, config.embed_dim)
        rates = drop_path_rates(config.depths, config.drop_path_rate)
        window = (config.window_size, config.window_size)
        self.layers = nn.ModuleList(
            SwinStage(
                dim=self.num_features[i], depth=config.depths[i], num_heads=config.num_heads[i],
                window_size=window, drop_path=rates[i], shrink_window_to_input=False,
                mlp_ratio=config.mlp_ratio,
                downsample=PatchMerging(self.num_features[i]) if i < num_stages - 1 else None,
                use_checkpoint=use_checkpoint,
            )
            for i in range(num_stages)
        )
        for i, channels in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))
        self.apply(init_swin_weights)

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> 4 maps [B, C_i, H_i, W_i] at strides 4, 8, 16, 32 (H_1 = ceil(H/4),
        then H_{i+1} = ceil(H_i / 2))."""
        x = self.patch_embed(images)
        outputs = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            norm: nn.LayerNorm = getattr(self, f"norm{i}")
            outputs.append(norm(x).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outputs


class SwinBackbone(nn.Module):
    """Per-frame image Swin with the interface the ReferFormer model consumes.

    Attributes:
        body: the :class:`SwinTransformer` (state-dict keys ``body.*``).
        num_channels: channels of the 4 outputs (strides 4, 8, 16, 32).
    """

    def __init__(self, config: SwinConfig, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.config = config
        self.body = SwinTransformer(config, use_checkpoint=use_checkpoint)
        self.num_channels: list[int] = list(self.body.num_features)
        self.strides: list[int] = [config.patch_size * 2**i for i in range(len(config.depths))]

    def forward(self, frames: Tensor, num_frames: int) -> list[Tensor]:
        """
        Args:
            frames: [B*T, 3, H, W] normalised frames (each frame is processed on its own).
            num_frames: T (unused: the image Swin has no temporal interaction).
        Returns:
            4 maps [B*T, C_l, H_l, W_l] at strides 4, 8, 16, 32.
        """
        del num_frames
        return self.body(frames)


def build_swin_backbone(name: str, use_checkpoint: bool = False) -> SwinBackbone:
    """Build ``swin_{t,s,b,l}_p4w7`` (randomly initialised; load weights separately).

    Args:
        name: variant name, a key of :data:`SWIN_CONFIGS`.
        use_checkpoint: recompute block activations in the backward pass
            (``torch.utils.checkpoint``) to save memory when training.
    """
    if name not in SWIN_CONFIGS:
        raise UserError(f"unknown Swin backbone {name!r}; choose one of {', '.join(SWIN_CONFIGS)}")
    return SwinBackbone(SWIN_CONFIGS[name], use_checkpoint=use_checkpoint)
