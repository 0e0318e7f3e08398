"""The tracklet-grounding model (referformer.models.tracklets.model) and its pipeline
(referformer.inference.tracklets): presets, the Mask R-CNN behind the segmenter protocol, the model
folder round trip, and sentences answered alike alone or among several."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from propagation_toys import BLUE, RED, colour_propagator, draw
from test_tracklets_building import ColourSegmenter

from referformer.checkpoint import MODEL_TYPES, load_model, save_pretrained
from referformer.config import TextEncoderConfig
from referformer.inference.tracklets import TrackletPredictor, mask_boxes
from referformer.models.tracklets import TRACKLETS_PRESETS, TrackletGrounder, TrackletsConfig, build_tracklet_grounder
from referformer.synthetic import build_synthetic_tokenizer, synthetic_text_config
from referformer.text import load_tokenizer


def _tiny_config() -> TrackletsConfig:
    """tracklets-tiny with a 1-layer RoBERTa of the synthetic tokenizer's vocabulary, a 1-layer F_Gnd."""
    text = TextEncoderConfig(vocab_size=synthetic_text_config()["vocab_size"], hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return dataclasses.replace(TRACKLETS_PRESETS["tracklets-tiny"], text_encoder=text, d_model=32, num_layers=1,
                               num_heads=2, ffn_dim=64, mlp_dim=32, dropout=0.0, num_key_frames=3)


@pytest.fixture(scope="module")
def tiny() -> TrackletGrounder:
    torch.manual_seed(0)
    return build_tracklet_grounder(_tiny_config()).eval()


def test_presets_round_trip_and_hold_the_published_setting() -> None:
    paper = TRACKLETS_PRESETS["tracklets-paper"]
    assert (paper.num_key_frames, paper.max_tracklets, paper.num_layers, paper.num_heads, paper.d_model) == (7, 10, 4, 12, 768)
    assert paper.visual_backbone == "resnet101" and paper.text_encoder.hidden_size == 768 and not paper.motion
    assert paper.segmenter.num_classes == 2 and paper.nms_iou == 0.5
    for config in TRACKLETS_PRESETS.values():
        data = json.loads(json.dumps(config.to_dict()))
        assert data["model_type"] == "tracklets" and TrackletsConfig.from_dict(data) == config.validate()
    tiny = TRACKLETS_PRESETS["tracklets-tiny"]
    assert (tiny.segmenter.min_size, tiny.segmenter.max_size, tiny.d_model, tiny.propagator) == (96, 128, 128, "propagator-tiny")


def test_mask_rcnn_segmenter_keeps_the_protocol(tiny: TrackletGrounder, one_thread) -> None:
    results = tiny.instance_segmenter()([torch.rand(3, 24, 32), torch.rand(3, 48, 64)])
    assert len(results) == 2
    for result, (h, w) in zip(results, [(24, 32), (48, 64)]):
        masks, scores = result["masks"], result["scores"]
        assert masks.dtype == torch.bool and masks.shape[1:] == (h, w) and len(masks) == len(scores) <= 10
        assert torch.all(scores[:-1] >= scores[1:]) and torch.all(scores >= 0.3)  # sorted, thresholded
    assert tiny.encode_frames(torch.zeros(2, 3, 96, 128)).shape == (2, 40, 12, 16)  # stride 8, 40 channels


def test_save_pretrained_and_load_model_round_trip(tiny: TrackletGrounder, tmp_path) -> None:
    assert "tracklets" in MODEL_TYPES
    folder = save_pretrained(tiny, tmp_path / "model")
    stored = json.loads((folder / "config.json").read_text())["model"]
    assert stored["model_type"] == "tracklets" and stored["text_encoder"]["model_type"] == "roberta"
    loaded = load_model(folder)
    assert isinstance(loaded, TrackletGrounder) and loaded.config == tiny.config
    ours, theirs = tiny.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_pipeline_answers_a_sentence_alike_alone_or_among_several(tiny: TrackletGrounder, tmp_path, one_thread) -> None:
    tokenizer = load_tokenizer(build_synthetic_tokenizer(tmp_path / "tok"))
    frames = draw(32, 40, [[(RED, 2 + t, 4, 8), (BLUE, 24, 16, 10)] for t in range(6)])
    predictor = TrackletPredictor(tiny, tokenizer, colour_propagator(), segmenter=ColourSegmenter())
    tracklets = predictor.tracklets(frames)
    assert tracklets.key_frames == [0, 2, 5] and len(tracklets) == 2  # red and blue, duplicates suppressed
    sentences = ["the big blue square on the right", "the red square", "a square"]
    several = predictor.ground_sentences(frames, tracklets, sentences)
    for i, sentence in enumerate(sentences):
        # the first from scratch (tracklets rebuilt: the same ones), the others on the same tracklets
        alone = (predictor.predict(frames, [sentence]) if i == 0 else
                 predictor.ground_sentences(frames, tracklets, [sentence]))[0]
        assert alone.query == several[i].query
        assert torch.allclose(alone.query_scores, several[i].query_scores, atol=1e-5)
        assert torch.allclose(alone.scores, several[i].scores, atol=1e-5)
    for prediction in several:
        assert prediction.masks.shape == (6, 32, 40) and prediction.masks.dtype == torch.bool
        assert torch.equal(prediction.masks, tracklets.masks[prediction.query])
        assert torch.allclose(prediction.query_scores.sum(), torch.tensor(1.0), atol=1e-5)  # mean of per-frame softmaxes
        assert torch.allclose(prediction.scores.mean(), prediction.query_scores[prediction.query], atol=1e-6)
        assert prediction.boxes.shape == (6, 4)
    # boxes are pixel edges of the masks: red at frame 0 covers x 2..10, y 4..12
    red = mask_boxes(torch.from_numpy((frames == RED).all(-1)))
    assert red[0].tolist() == [2.0, 4.0, 10.0, 12.0]
