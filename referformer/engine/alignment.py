"""Our training option: a sentence-object alignment (InfoNCE) term, ``LossWeights.loss_align``.

Not in the original. From scratch (the bundled ``synthetic-tiny`` model: no ImageNet backbone, no
pre-trained RoBERTa) the set criterion teaches segmentation long before it teaches which object a
sentence names (docs/synthetic.md). This term gives the matching a direct signal: with several
sentences on one clip (``sentences_per_clip > 1``), each sentence feature (the queries' content)
must pick its own object among the distinct objects named on that clip, each object embedded as the
mean of the stride-8 ``input_proj`` features inside its target masks (all frames):
``cross_entropy(cos(s_i, o_j) / temperature, j = own object)``, averaged over the sentences of the
batch whose clip has at least two distinct objects.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from referformer.errors import UserError

__all__ = ["ALIGNMENT_TEMPERATURE", "object_embeddings", "require_several_sentences", "sentence_object_alignment_loss"]

ALIGNMENT_TEMPERATURE = 0.1
FEATURE_STRIDE = 8  # srcs[0], the first input_proj level, for every backbone


def require_several_sentences(sentences_per_clip: int) -> None:
    """Raise ``UserError`` unless clips carry 2 or more sentences (one object per clip: nothing to contrast)."""
    if sentences_per_clip < 2:
        raise UserError("the alignment term contrasts the objects that the sentences of one clip name: it needs "
                        f"sentences_per_clip >= 2 (--sentences-per-clip 2 or more), got {sentences_per_clip}")


def object_embeddings(features: torch.Tensor, masks: torch.Tensor, stride: int = FEATURE_STRIDE) -> torch.Tensor:
    """Mean of ``features`` inside each object's masks.

    Args:
        features: ``[T, C, h, w]`` one clip's feature maps (of the padded frames).
        masks: ``[J, T, H, W]`` the objects' masks at input resolution (``H <= h * stride``,
            ``W <= w * stride``: the frames were padded bottom / right).
        stride: of ``features`` w.r.t. the padded frames.
    Returns:
        ``[J, C]``; every cell is weighted by the fraction of it the mask covers.
    """
    t, _, h, w = features.shape
    height, width = masks.shape[-2:]
    padded = F.pad(masks.float(), (0, w * stride - width, 0, h * stride - height))
    cover = F.avg_pool2d(padded.flatten(0, 1)[:, None], stride)[:, 0].reshape(len(masks), t, h, w)
    weighted = torch.einsum("jthw,tchw->jc", cover, features.float())
    return weighted / cover.sum((1, 2, 3)).clamp_min(1e-6)[:, None]


def sentence_object_alignment_loss(features: dict[str, Any], targets: list[dict[str, Any]],
                                   temperature: float = ALIGNMENT_TEMPERATURE) -> torch.Tensor:
    """The alignment term (module docstring) -> scalar.

    Args:
        features: ``ReferFormer.forward(..., return_features=True)["features"]``: ``visual``
            ``[n * T, C, h, w]`` (n clips), ``sentence`` ``[s, C]``, ``clip_index`` ``[s]``,
            ``num_frames`` T.
        targets: ``s`` per-sentence dicts with ``masks`` ``[T, H, W]``.
    """
    visual, sentences = features["visual"], features["sentence"]
    clip_index = features["clip_index"].tolist()
    num_frames = int(features["num_frames"])
    losses = []
    for clip in sorted(set(clip_index)):
        rows = [i for i, c in enumerate(clip_index) if c == clip]
        objects: list[torch.Tensor] = []  # distinct target masks of the clip
        own = []
        for i in rows:
            mask = targets[i]["masks"]
            match = next((j for j, other in enumerate(objects) if torch.equal(other, mask)), None)
            if match is None:
                objects.append(mask)
                match = len(objects) - 1
            own.append(match)
        if len(objects) < 2:
            continue
        embeddings = object_embeddings(visual[clip * num_frames:(clip + 1) * num_frames], torch.stack(objects))
        logits = F.normalize(sentences[rows].float(), dim=-1) @ F.normalize(embeddings, dim=-1).T / temperature
        losses.append(F.cross_entropy(logits, torch.tensor(own, device=logits.device), reduction="none"))
    if not losses:
        return sentences.sum() * 0.0  # keeps the graph (DDP) when no clip has two objects
    return torch.cat(losses).mean()
