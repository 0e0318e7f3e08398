"""Bringing dataset targets and model outputs to a common shape for the matcher and criterion.

A target is the per-clip dict of the datasets (``DATASETS.md`` section 0): ``masks`` ``[T, H, W]``
(bool/0-1, input resolution), ``boxes`` ``[T, 4]`` normalised cxcywh, ``valid`` ``[T]`` (1 where
the object is visible), ``labels`` ``[T]`` (int64), and, for A2D / JHMDB, ``valid_indices`` ``[1]``
(position of the single annotated frame in the clip; then ``masks``/``boxes``/``valid``/``labels``
have length 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MASK_OUT_STRIDE", "downsample_target_masks", "select_annotated_frames"]

# Stride of ``pred_masks`` w.r.t. the (padded) input, hard-coded in the original (mask_out_stride).
MASK_OUT_STRIDE = 4


def downsample_target_masks(
    targets: list[dict[str, Any]], mask_size: tuple[int, int], stride: int = MASK_OUT_STRIDE
) -> torch.Tensor:
    """Pad the target masks bottom/right with zeros and subsample them to the mask stride.

    Exactly what the original matcher and criterion do (CondInst style): the masks are zero-padded
    to the padded input size (``nested_tensor_from_tensor_list(size_divisibility=32)`` there; here
    ``mask_size * stride``, the same size since the collate pads images to a multiple of 32), then
    **subsampled** with ``masks[..., stride // 2 :: stride, stride // 2 :: stride]`` (no pooling,
    no interpolation; the predictions are never upsampled).

    Args:
        targets: per-clip dicts with ``masks`` ``[T, H, W]`` at input resolution.
        mask_size: ``(h, w)`` of ``pred_masks`` (stride-4 pixels).
    Returns:
        float ``[B, T, h, w]`` of 0/1.
    """
    padded_h, padded_w = mask_size[0] * stride, mask_size[1] * stride
    stacked = []
    for index, target in enumerate(targets):
        masks = target["masks"]
        height, width = masks.shape[-2:]
        if height > padded_h or width > padded_w:
            raise ValueError(
                f"target {index}: masks of size {height}x{width} exceed the padded input size "
                f"{padded_h}x{padded_w} implied by pred_masks {tuple(mask_size)} at stride {stride}"
            )
        masks = F.pad(masks.float(), (0, padded_w - width, 0, padded_h - height))
        stacked.append(masks)
    start = stride // 2
    return torch.stack(stacked)[:, :, start::stride, start::stride]


def select_annotated_frames(outputs: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep only the annotated frames of the outputs when the targets have fewer frames (A2D/JHMDB).

    The original model does this itself, after the backbone, with ``valid_indices`` (so its
    outputs already have ``T = 1``); if ours returns every frame, this picks the same frame.
    Outputs that already match the targets' length are returned unchanged.

    Args:
        outputs: ``pred_logits`` ``[B, T, Q, K]``, ``pred_boxes`` ``[B, T, Q, 4]``,
            ``pred_masks`` ``[B, T, Q, h, w]``, optional ``aux_outputs`` (list of the same).
        targets: per-clip dicts; ``valid_indices`` ``[T_annotated]`` is required when
            ``T_annotated < T``.
    """
    num_frames = outputs["pred_logits"].shape[1]
    target_frames = len(targets[0]["valid"])
    if target_frames == num_frames:
        return outputs
    if any("valid_indices" not in t for t in targets):
        raise ValueError(
            f"the outputs have {num_frames} frames but the targets {target_frames}, and the targets "
            "have no 'valid_indices' telling which frames are annotated"
        )
    index = torch.stack([t["valid_indices"].to(outputs["pred_logits"].device).long() for t in targets])

    def pick(layer: dict[str, Any]) -> dict[str, Any]:
        picked = dict(layer)
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            value = layer[key]
            gather_index = index.view(index.shape + (1,) * (value.dim() - 2)).expand(
                -1, -1, *value.shape[2:]
            )
            picked[key] = value.gather(1, gather_index)
        return picked

    selected = pick(outputs)
    if "aux_outputs" in outputs:
        selected["aux_outputs"] = [pick(layer) for layer in outputs["aux_outputs"]]
    return selected
