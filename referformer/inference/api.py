"""Simple Python API: frames + sentences in, per-sentence masks/boxes/scores out.

    from referformer import load_model, segment_video
    model = load_model("converted/ytvos-r50")            # or an official .pth with preset=...
    results = segment_video(model, "video/frames/", ["a dog holding a white umbrella"])
    results[0].masks  # bool [T, H, W] at the original resolution

Pipeline (the original ``inference_ytvos.py``): resize to short side 360 + ImageNet normalisation,
the whole clip through the model at once, one query per sentence chosen by the mean score over
frames, its mask logits upsampled bilinearly to the original size and thresholded at 0.5.
The video is encoded once (``encode_video``) and decoded for the sentences in batches.
For long videos use the streaming predictor (``referformer.inference.predictor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from referformer.errors import UserError
from referformer.inference.postprocess import postprocess_clip
from referformer.inference.preprocess import FramesInput, preprocess_frames
from referformer.text import load_tokenizer, normalize_sentence, tokenize


@dataclass
class SentencePrediction:
    """Result for one sentence. masks: bool [T, H, W] (original size); boxes: float [T, 4] xyxy pixels of the
    original frames; scores: [T] per-frame score of the chosen query; query: chosen query index;
    query_scores: [Q] mean sigmoid score of every query; mask_logits: [T, H, W] (only if requested)."""

    sentence: str
    masks: Tensor
    boxes: Tensor
    scores: Tensor
    query: int
    query_scores: Tensor
    mask_logits: Tensor | None = None


def load_model(source: str | Path, preset: str | None = None, device: str | torch.device = "cpu",
               unsafe_load: bool = False) -> nn.Module:
    """A model in eval mode from a converted directory (``save_pretrained``) or an official ``.pth``.

    For a ``.pth``, ``preset`` names the architecture; if omitted it is inferred from the keys
    (``<backbone>-release`` or ``<backbone>-default``). A RefVOS preset (``refvos-*``) reads one of our
    training checkpoints (``last.pth``; RefVOS has no official checkpoint format here). A folder
    builds the model its ``config.json`` names (ReferFormer or RefVOS).
    """
    from referformer.checkpoint import (build_from_config, check_all_keys_loaded, from_pretrained, infer_architecture,
                                        load_official_state_dict, model_type_of, read_official_checkpoint)
    from referformer.models import build_model
    from referformer.presets import get_preset

    source = Path(source)
    if source.is_dir():
        return from_pretrained(source, device=device)
    sd = read_official_checkpoint(source, unsafe_load=unsafe_load)
    if preset is None:
        info = infer_architecture(sd)
        if info["backbone"] is None or info["with_box_refine"] is None:
            raise UserError(f"cannot infer the architecture of {source}; pass preset=NAME (see `referformer presets`)")
        preset = f"{info['backbone']}-{'release' if info['with_box_refine'] else 'default'}"
    config = get_preset(preset).config
    if model_type_of(config) != "referformer":
        model = build_from_config(config, init_weights=False)
        check_all_keys_loaded(*model.load_state_dict(sd, strict=False), f"{source} does not match preset {preset!r}")
        return model.to(device).eval()
    model = build_model(config, init_weights=False)
    load_official_state_dict(model, sd)
    return model.to(device).eval()


@torch.inference_mode()
def segment_video(model: nn.Module, frames: FramesInput, sentences: str | Sequence[str], tokenizer: Any = None,
                  threshold: float = 0.5, short_side: int = 360, max_size: int | None = None,
                  sentence_batch_size: int = 4, return_logits: bool = False) -> list[SentencePrediction]:
    """Segment the object each sentence refers to in every frame.

    frames: a folder of images, a list of PIL images / HxWx3 uint8 arrays / tensors, or a [T, H, W, 3]
    array; sentences: one or more referring expressions (lower-cased and whitespace-normalised like
    the original); tokenizer: a loaded tokenizer, a path, or None for ``model.config.text_encoder.tokenizer``
    (``roberta-base`` from the offline cache).
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer or model.config.text_encoder.tokenizer)
    device = next(model.parameters()).device
    clip, orig_size = preprocess_frames(frames, short_side=short_side, max_size=max_size)
    visual = model.encode_video(clip.to(device)[None])
    results: list[SentencePrediction] = []
    for start in range(0, len(sentences), sentence_batch_size):
        batch = list(sentences[start:start + sentence_batch_size])
        ids, mask = tokenize(tokenizer, batch, device=device)
        out = model.decode(visual, model.encode_text(ids, mask))
        for i, sentence in enumerate(batch):
            pred = postprocess_clip(out["pred_logits"][i], out["pred_boxes"][i], out["pred_masks"][i], orig_size,
                                    threshold=threshold)
            results.append(SentencePrediction(
                sentence=normalize_sentence(sentence), masks=pred.masks.cpu(), boxes=pred.boxes.cpu(),
                scores=pred.scores.cpu(), query=pred.query, query_scores=pred.query_scores.cpu(),
                mask_logits=pred.mask_logits.cpu() if return_logits else None))
    return results
