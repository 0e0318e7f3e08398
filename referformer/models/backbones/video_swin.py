"""Video Swin Transformer backbone (``video_swin_{t,s,b}_p4w7``) over the whole clip.

Same function and state-dict keys as the original ``models/video_swin_transformer.py``
(``VideoSwinTransformerBackbone`` built from the parts of ``SwinTransformer3D``): patch (1, 4, 4),
so no temporal downsampling; window (8, 7, 7); in every dimension where the map is not larger than
the window, the window shrinks to the map and the shift there is 0, and the relative-position bias
is read from the top-left ``N x N`` block of the full-window index table (upstream behaviour,
reproduced on purpose, see docs/backbones.md). Stage outputs are taken *before* patch merging and
have no output norm.

Keys (official minus ``backbone.0.``): ``body.patch_embed.{proj,norm}``,
``body.layers.{s}.blocks.{b}.*``, ``body.downsamples.{0,1,2}.{reduction,norm}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import PatchMerging

from referformer.errors import UserError
from referformer.models.backbones.window_attention import SwinStage, drop_path_rates, init_swin_weights


@dataclass(frozen=True)
class VideoSwinConfig:
    """Hyperparameters of one Video Swin variant."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    patch_size: tuple[int, int, int] = (1, 4, 4)
    window_size: tuple[int, int, int] = (8, 7, 7)
    mlp_ratio: float = 4.0
    # Training-only regulariser (inactive in eval); values of the Video Swin Kinetics configs.
    drop_path_rate: float = 0.1


VIDEO_SWIN_CONFIGS: dict[str, VideoSwinConfig] = {
    "video_swin_t_p4w7": VideoSwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "video_swin_s_p4w7": VideoSwinConfig(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1),
    "video_swin_b_p4w7": VideoSwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
}


class PatchEmbed3d(nn.Module):
    """Patch projection: [B, 3, T, H, W] -> [B, T', H', W', C] channels-last, T' = ceil(T / p_t) ...

    Zero-pads W, H, T at the end to multiples of the patch size first (the original's order).
    """

    def __init__(self, patch_size: tuple[int, int, int], embed_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, clips: Tensor) -> Tensor:
        pads = [(-size) % p for size, p in zip(clips.shape[-3:], self.patch_size)]  # T, H, W
        if any(pads):
            clips = F.pad(clips, (0, pads[2], 0, pads[1], 0, pads[0]))
        return self.norm(self.proj(clips).permute(0, 2, 3, 4, 1))


class VideoSwinTransformer(nn.Module):
    """Patch embedding, four stages and the three patch-merging layers kept apart (``downsamples``)."""

    def __init__(self, config: VideoSwinConfig, use_checkpoint: bool = False) -> None:
        super().__init__()
        num_stages = len(config.depths)
        self.num_features = [config.embed_dim * 2**i for i in range(num_stages)]
        self.patch_embed = PatchEmbed3d(config.patch_size, config.embed_dim)
        rates = drop_path_rates(config.depths, config.drop_path_rate)
        self.layers = nn.ModuleList(
            SwinStage(
                dim=self.num_features[i], depth=config.depths[i], num_heads=config.num_heads[i],
                window_size=config.window_size, drop_path=rates[i], shrink_window_to_input=True,
                mlp_ratio=config.mlp_ratio, use_checkpoint=use_checkpoint,
            )
            for i in range(num_stages)
        )
        self.downsamples = nn.ModuleList(PatchMerging(self.num_features[i]) for i in range(num_stages - 1))
        self.apply(init_swin_weights)

    def forward(self, clips: Tensor) -> list[Tensor]:
        """[B, 3, T, H, W] -> 4 maps [B, T, C_i, H_i, W_i] (stage outputs before merging)."""
        x = self.patch_embed(clips)  # [B, T, H, W, C]
        outputs = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            outputs.append(x.permute(0, 1, 4, 2, 3))
            if i < len(self.downsamples):
                x = self.downsamples[i](x)  # merges H, W only
        return outputs


class VideoSwinBackbone(nn.Module):
    """Video Swin over each clip with the interface the ReferFormer model consumes.

    Attributes:
        body: the :class:`VideoSwinTransformer` (state-dict keys ``body.*``).
        num_channels: channels of the 4 outputs (strides 4, 8, 16, 32).
    """

    def __init__(self, config: VideoSwinConfig, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.config = config
        self.body = VideoSwinTransformer(config, use_checkpoint=use_checkpoint)
        self.num_channels: list[int] = list(self.body.num_features)
        self.strides: list[int] = [config.patch_size[-1] * 2**i for i in range(len(config.depths))]

    def forward(self, frames: Tensor, num_frames: int) -> list[Tensor]:
        """
        Args:
            frames: [B*T, 3, H, W] normalised frames, the T frames of a clip contiguous.
            num_frames: T.
        Returns:
            4 maps [B*T, C_l, H_l, W_l] at strides 4, 8, 16, 32.
        """
        total, channels, height, width = frames.shape
        if num_frames <= 0 or total % num_frames != 0:
            raise UserError(
                f"video Swin got {total} frames, not a multiple of num_frames={num_frames}; "
                "pass frames as [batch * num_frames, 3, H, W]"
            )
        clips = frames.view(total // num_frames, num_frames, channels, height, width).transpose(1, 2)
        outputs = self.body(clips)
        return [out.flatten(0, 1).contiguous() for out in outputs]


def build_video_swin_backbone(name: str, use_checkpoint: bool = False) -> VideoSwinBackbone:
    """Build ``video_swin_{t,s,b}_p4w7`` (randomly initialised; load weights separately).

    Args:
        name: variant name, a key of :data:`VIDEO_SWIN_CONFIGS`.
        use_checkpoint: recompute block activations in the backward pass
            (``torch.utils.checkpoint``) to save memory when training.
    """
    if name not in VIDEO_SWIN_CONFIGS:
        raise UserError(
            f"unknown Video Swin backbone {name!r}; choose one of {', '.join(VIDEO_SWIN_CONFIGS)}"
        )
    return VideoSwinBackbone(VIDEO_SWIN_CONFIGS[name], use_checkpoint=use_checkpoint)
