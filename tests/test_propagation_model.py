"""The space-time-memory propagator network: its memory read and soft aggregation against hand
computations, its shapes, its model folder (``model_type: propagator``), and a randomly initialised
one streamed through the scheduler (shapes, probabilities, labels, given frames, resizing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from propagation_toys import RED, colour_mask, draw

from referformer.checkpoint import MODEL_TYPES, load_model, save_pretrained
from referformer.errors import UserError
from referformer.inference.propagation import FramePrompt, label_map, propagate
from referformer.inference.propagation_memory import MemoryPropagator, processing_size
from referformer.inference.propagators import load_propagator, memory_propagator
from referformer.models.propagation import (PropagatorConfig, SpaceTimeMemoryNet, aggregate_logits, build_propagator,
                                            propagator_preset, read_memory)


def test_memory_read_by_hand() -> None:
    # two memory positions with keys (1, 0) and (0, 1), values 10 and 20; the query's key is (1, 0):
    # similarity (2 q.k - |k|^2) / sqrt(2) = +1/sqrt(2) and -1/sqrt(2)
    memory_key = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [B=1, C_k=2, N=2]
    memory_value = torch.tensor([[[[10.0, 20.0]]]])  # [B=1, K=1, C_v=1, N=2]
    query = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    weight = 1 / (1 + math.exp(-2 / math.sqrt(2)))
    out = read_memory(query, memory_key, memory_value)
    assert out.shape == (1, 1, 1, 1, 1)
    assert out.item() == pytest.approx(10 * weight + 20 * (1 - weight), abs=1e-5)


def test_soft_aggregation_by_hand() -> None:
    probs = torch.tensor([0.8, 0.6, 0.9]).view(1, 3, 1, 1)
    logits = torch.logit(probs)
    merged = torch.softmax(aggregate_logits(logits, torch.tensor([[True, True, False]])), dim=1).flatten()
    # the third object is a padding slot: p = 0; background (1 - .8)(1 - .6) = .08; probabilities are the
    # normalised odds p / (1 - p): .08/.92, 4, 1.5
    odds = torch.tensor([0.08 / 0.92, 4.0, 1.5])
    assert torch.allclose(merged[:3], odds / odds.sum(), atol=1e-5) and merged[3] < 1e-6


@pytest.mark.parametrize("preset", ["propagator-tiny", "propagator-r18"])
def test_training_forward_shapes_and_gradients(preset: str) -> None:
    torch.manual_seed(0)
    model = build_propagator(propagator_preset(preset))
    frames = torch.randn(2, 3, 3, 64, 96)
    first = torch.zeros(2, 2, 64, 96)
    first[:, 0, 10:30, 10:30] = 1
    out = model(frames, first, torch.tensor([[True, False], [True, True]]))["logits"]
    assert out.shape == (2, 2, 3, 64, 96)  # [B, T - 1, K + 1, H, W]
    out.logsumexp(2).mean().backward()
    assert model.key_encoder.trunk.stem[0].weight.grad.abs().sum() > 0
    assert model.value_encoder.trunk.stem[0].weight.grad.abs().sum() > 0


def test_config_validation_and_model_folder(tmp_path) -> None:
    with pytest.raises(UserError, match="key_stride must be 8 or 16"):
        PropagatorConfig(key_stride=4).validate()
    assert "propagator" in MODEL_TYPES
    config = propagator_preset("propagator-tiny")
    model = build_propagator(config)
    folder = save_pretrained(model, tmp_path / "prop")
    loaded = load_model(folder)
    assert isinstance(loaded, SpaceTimeMemoryNet) and loaded.config == config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    backend = load_propagator(folder, "cpu", memory_frames=2)
    assert isinstance(backend, MemoryPropagator)
    assert (backend.short_side, backend.memory_frames, backend.memory_every) == (192, 2, 1)
    assert memory_propagator(loaded, short_side=48).short_side == 48
    with pytest.raises(UserError, match="propagator not found"):
        load_propagator(tmp_path / "missing")
    bundled = load_propagator("propagator-tiny")  # the trained one inside the package, at its own settings
    assert isinstance(bundled, MemoryPropagator) and bundled.name == "propagator-tiny"
    assert (bundled.short_side, bundled.memory_frames, bundled.memory_every) == (192, 4, 1)


def test_processing_size() -> None:
    assert processing_size(480, 854, None) == (480, 854)
    assert processing_size(720, 1280, 480) == (480, 853)
    assert processing_size(100, 50, 25) == (50, 25)


def test_random_network_streams_both_ways_with_resizing() -> None:
    torch.manual_seed(0)
    model = build_propagator(propagator_preset("propagator-tiny")).eval()
    frames = draw(40, 56, [[(RED, 2 + 3 * t, 10, 8)] for t in range(9)])
    red = colour_mask(frames, RED)
    other = np.zeros((40, 56), bool)
    other[25:35, 30:45] = True
    backend = MemoryPropagator(model, "cpu", short_side=24, memory_frames=2, memory_every=2)  # 24x34 inside
    result = propagate(backend, list(frames), [FramePrompt(4, {1: red[4], 2: other})], window=4)
    assert result.probs.shape == (9, 2, 40, 56) and result.labels.shape == (9, 40, 56)
    assert result.probs.min() >= 0 and result.probs.max() <= 1
    assert np.array_equal(result.labels, label_map(result.probs, [1, 2]))
    assert np.array_equal(result.masks(1)[4], red[4]) and np.array_equal(result.masks(2)[4], other)  # exact
    assert result.direction.tolist() == [[-1, -1]] * 4 + [[0, 0]] + [[1, 1]] * 4
