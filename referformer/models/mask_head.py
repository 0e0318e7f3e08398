"""Dynamic-convolution mask head (CondInst style) with relative coordinates in input pixels.

The parameters come from ``ReferFormer.controller`` (an MLP); this module holds the functions
that turn them into masks. Written by hand: the parameter layout must match the checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from referformer.models.fastpath import reference_mode_enabled


def parse_dynamic_params(params: Tensor, channels: int, weight_nums: list[int],
                         bias_nums: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    """params: [n, sum(weight_nums) + sum(bias_nums)], laid out [w0, w1, ..., b0, b1, ...]
    -> per layer grouped-conv weights [n * out, in, 1, 1] and biases [n * out]."""
    n = params.size(0)
    num_layers = len(weight_nums)
    splits = list(torch.split_with_sizes(params, weight_nums + bias_nums, dim=1))
    weights, biases = splits[:num_layers], splits[num_layers:]
    for layer in range(num_layers):
        out = channels if layer < num_layers - 1 else 1
        weights[layer] = weights[layer].reshape(n * out, -1, 1, 1)
        biases[layer] = biases[layer].reshape(n * out)
    return weights, biases


def compute_locations(h: int, w: int, stride: int, device: torch.device) -> Tensor:
    """Pixel centres of a stride-``stride`` grid in input pixels: [h * w, 2] as (x, y) = stride * j + stride // 2."""
    shifts_x = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def dynamic_mask_logits(mask_features: Tensor, params: Tensor, reference_points: Tensor, image_sizes: Tensor,
                        channels: int, weight_nums: list[int], bias_nums: list[int], rel_coord: bool = True,
                        stride: int = 4) -> Tensor:
    """Run each query's dynamic convs over its frame's mask features.

    mask_features: [b, t, C, h, w] (stride ``stride``); params: [b, t, q, P];
    reference_points: [b, t, q, 2] normalised (x, y) in [0, 1];
    image_sizes: [b, 2] input size (H, W) in pixels (``targets[i]["size"]`` of the original)
    -> mask logits [b, t, q, h, w] at stride ``stride``.
    """
    if not reference_mode_enabled():
        return dynamic_mask_logits_matmul(mask_features, params, reference_points, image_sizes, channels,
                                          weight_nums, bias_nums, rel_coord=rel_coord, stride=stride)
    b, t, c, h, w = mask_features.shape
    q = params.shape[2]
    feats = mask_features[:, :, None].expand(b, t, q, c, h, w)
    if rel_coord:
        scale = torch.stack([image_sizes[:, 1], image_sizes[:, 0]], dim=-1).to(reference_points)  # (W, H)
        ref_pixels = reference_points * scale[:, None, None, :]
        locations = compute_locations(h, w, stride, mask_features.device)
        rel = ref_pixels.reshape(b, t, q, 1, 1, 2) - locations.reshape(1, 1, 1, h, w, 2)
        feats = torch.cat([feats, rel.permute(0, 1, 2, 5, 3, 4)], dim=3)
    n = b * t * q
    x = feats.reshape(1, -1, h, w)
    weights, biases = parse_dynamic_params(params.reshape(n, -1), channels, weight_nums, bias_nums)
    for i, (wt, bs) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, wt, bias=bs, groups=n)
        if i < len(weights) - 1:
            x = F.relu(x)
    # aligned_bilinear with factor mask_feat_stride / mask_out_stride = 1 is the identity.
    return x.reshape(b, t, q, h, w)


def dynamic_mask_logits_matmul(mask_features: Tensor, params: Tensor, reference_points: Tensor,
                               image_sizes: Tensor, channels: int, weight_nums: list[int], bias_nums: list[int],
                               rel_coord: bool = True, stride: int = 4) -> Tensor:
    """``dynamic_mask_logits`` as batched matmuls per frame (same arguments and result up to float rounding).

    The plain version copies the [C, h, w] features (plus 2 coordinate maps) once per query and runs a
    grouped 1x1 conv; here the q queries of a frame share one [q * channels, C] @ [C, h * w] matmul, and the
    relative-coordinate channels are added as w_rel . (ref - location) without materialising them.
    """
    b, t, c, h, w = mask_features.shape
    q = params.shape[2]
    n = b * t * q
    weights, biases = parse_dynamic_params(params.reshape(n, -1), channels, weight_nums, bias_nums)
    feats = mask_features.reshape(b * t, c, h * w)
    w0 = weights[0].reshape(b * t, q, -1, weights[0].shape[1])  # [bt, q, out, C (+2)]
    out0 = w0.shape[2]
    x = torch.matmul(w0[..., :c].reshape(b * t, q * out0, c), feats)  # [bt, q*out, hw]
    x = x.view(b * t, q, out0, h * w)
    if rel_coord:
        scale = torch.stack([image_sizes[:, 1], image_sizes[:, 0]], dim=-1).to(reference_points)  # (W, H)
        ref_pixels = (reference_points * scale[:, None, None, :]).reshape(b * t, q, 2)
        locations = compute_locations(h, w, stride, mask_features.device).to(x.dtype)  # [hw, 2]
        w_rel = w0[..., c:]  # [bt, q, out, 2]
        # w_rel . (ref - loc) = (w_rel . ref) - w_rel @ loc^T
        x = x + ((w_rel * ref_pixels[:, :, None, :]).sum(-1, keepdim=True)
                 - torch.matmul(w_rel, locations.t()))
    x = x + biases[0].view(b * t, q, out0, 1)
    for wt, bs in zip(weights[1:], biases[1:]):
        x = F.relu(x)
        wt = wt.reshape(b * t, q, -1, wt.shape[1])  # [bt, q, out, in]
        x = torch.matmul(wt, x) + bs.view(b * t, q, -1, 1)
    return x.reshape(b, t, q, h, w)
