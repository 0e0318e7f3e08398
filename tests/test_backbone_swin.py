"""Image Swin backbone: official keys, fixture features, small-map numerics, window helpers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from referformer.errors import UserError
from referformer.models.backbones.swin import SWIN_CONFIGS, SwinBackbone, SwinConfig, build_swin_backbone
from referformer.models.backbones.window_attention import (
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

FIXTURE_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------------------------
# helpers


def read_backbone_spec(shared_reference: Path, name: str, config: str) -> list:
    sys.path.insert(0, str(shared_reference))
    import detweights

    suffix = "" if config == "default" else "_release"
    spec = detweights.read_spec(str(shared_reference / "model" / f"keys_{name}{suffix}.tsv"))
    return [entry for entry in spec if entry.key.startswith("backbone.0.body.")]


def load_generated_weights(model: torch.nn.Module, shared_reference: Path, name: str, seed: int = 0) -> None:
    """Load detweights-generated backbone weights; only the integer index buffers may be missing."""
    import detweights

    spec = read_backbone_spec(shared_reference, name, "default")
    state, skipped = detweights.generate_state_dict(spec, seed=seed)
    state = {key.removeprefix("backbone.0."): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert sorted(missing) == sorted(key.removeprefix("backbone.0.") for key in skipped)
    assert all(key.endswith("relative_position_index") for key in missing)


def compare_to_reference(ours: torch.Tensor, reference) -> float:
    """Max abs difference against a fixture tensor or its sampled-values record."""
    if isinstance(reference, dict):
        assert tuple(ours.shape) == tuple(reference["shape"])
        sampled = ours.flatten()[reference["sample_index"]]
        assert abs(ours.double().mean().item() - reference["mean"]) < 1e-5
        assert abs(ours.double().std().item() - reference["std"]) < 1e-4
        return (sampled - reference["sample_values"]).abs().max().item()
    assert ours.shape == reference.shape
    return (ours - reference).abs().max().item()


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Weights far from the trunc-normal init so that every term (bias table too) matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "relative_position_bias_table" in name:
                param.copy_(0.5 * noise)
            elif param.ndim >= 2:
                param.copy_(noise / math.sqrt(math.prod(param.shape[1:])))
            elif name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)


# ----------------------------------------------------------------------------------------------
# a literal transcription of the original models/swin_transformer.py forward (used as an oracle
# for sizes the fixtures do not cover; it reads only the parameters of our module)


def _original_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid([torch.arange(window), torch.arange(window)], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def _original_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def _original_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def _original_attention(attn, x, mask, ws):
    B_, N, C = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(B_, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (C // heads) ** -0.5
    logits = q @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[_original_index(ws).view(-1)].view(ws * ws, ws * ws, -1)
    logits = logits + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        logits = logits.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        logits = logits.view(-1, heads, N, N)
    probs = logits.softmax(-1)
    return attn.proj((probs @ v).transpose(1, 2).reshape(B_, N, C))


def _original_block(block, x, H, W, ws, shift, mask_matrix):
    B, L, C = x.shape
    shortcut = x
    x = block.norm1(x).view(B, H, W, C)
    pad_r = (ws - W % ws) % ws
    pad_b = (ws - H % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, Hp, Wp, _ = x.shape
    if shift > 0:
        shifted, mask = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)), mask_matrix
    else:
        shifted, mask = x, None
    windows = _original_partition(shifted, ws).view(-1, ws * ws, C)
    windows = _original_attention(block.attn, windows, mask, ws).view(-1, ws, ws, C)
    shifted = _original_reverse(windows, ws, Hp, Wp)
    x = torch.roll(shifted, shifts=(shift, shift), dims=(1, 2)) if shift > 0 else shifted
    x = x[:, :H, :W, :].contiguous().view(B, H * W, C)
    x = shortcut + x
    return x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


def _original_merge(merge, x, H, W):
    B, L, C = x.shape
    x = x.view(B, H, W, C)
    if (H % 2 == 1) or (W % 2 == 1):
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
    return merge.reduction(merge.norm(x.view(B, -1, 4 * C)))


def original_swin_forward(body, images, ws=7):
    shift = ws // 2
    patch = body.patch_embed.patch_size
    _, _, H, W = images.shape
    if W % patch != 0:
        images = F.pad(images, (0, patch - W % patch))
    if H % patch != 0:
        images = F.pad(images, (0, 0, 0, patch - H % patch))
    x = body.patch_embed.proj(images)
    Wh, Ww = x.shape[2:]
    x = body.patch_embed.norm(x.flatten(2).transpose(1, 2))
    outs = []
    for i, layer in enumerate(body.layers):
        H, W = Wh, Ww
        Hp, Wp = int(math.ceil(H / ws)) * ws, int(math.ceil(W / ws)) * ws
        img_mask = torch.zeros((1, Hp, Wp, 1))
        cnt = 0
        for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img_mask[:, h, w, :] = cnt
                cnt += 1
        mask_windows = _original_partition(img_mask, ws).view(-1, ws * ws)
        attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, (-100.0)).masked_fill(attn_mask == 0, 0.0)
        for b, block in enumerate(layer.blocks):
            x = _original_block(block, x, H, W, ws, 0 if b % 2 == 0 else shift, attn_mask)
        out = getattr(body, f"norm{i}")(x)
        outs.append(out.view(-1, H, W, out.shape[-1]).permute(0, 3, 1, 2).contiguous())
        if layer.downsample is not None:
            x = _original_merge(layer.downsample, x, H, W)
            Wh, Ww = (H + 1) // 2, (W + 1) // 2
    return outs


# ----------------------------------------------------------------------------------------------
# state-dict keys


@pytest.mark.parametrize("name", sorted(SWIN_CONFIGS))
@pytest.mark.parametrize("config", ["default", "release"])
def test_state_dict_keys_and_shapes_match_official(shared_reference, name, config):
    with torch.device("meta"):
        model = build_swin_backbone(name)
    ours = model.state_dict()
    spec = read_backbone_spec(shared_reference, name, config)
    expected = {entry.key.removeprefix("backbone.0."): entry for entry in spec}
    assert list(ours) == list(expected)
    for key, entry in expected.items():
        assert tuple(ours[key].shape) == entry.shape, key
        assert (ours[key].dtype == torch.int64) == (entry.dtype == "int64"), key


def test_num_channels_and_unknown_name():
    with torch.device("meta"):
        assert build_swin_backbone("swin_t_p4w7").num_channels == [96, 192, 384, 768]
        assert build_swin_backbone("swin_b_p4w7").num_channels == [128, 256, 512, 1024]
        assert build_swin_backbone("swin_l_p4w7").num_channels == [192, 384, 768, 1536]
    with pytest.raises(UserError, match="swin_t_p4w7"):
        build_swin_backbone("swin_x")


# ----------------------------------------------------------------------------------------------
# fixtures of the original code


@pytest.fixture(scope="module")
def fixture_swin_t(shared_reference) -> SwinBackbone:
    model = build_swin_backbone("swin_t_p4w7").eval()
    load_generated_weights(model, shared_reference, "swin_t_p4w7")
    return model


@pytest.mark.parametrize("config", ["default", "release"])
def test_backbone_features_match_fixture(shared_reference, fixture_swin_t, config):
    name = "swin_t_p4w7"
    fixtures = shared_reference / "model" / "fixtures"
    fixture = torch.load(fixtures / f"{name}_{config}_seed0.pt", weights_only=False)
    reference = torch.load(fixtures / f"{name}_{config}_seed0.intermediates.pt", weights_only=False)
    model = fixture_swin_t
    frames = fixture["inputs"]["frames"]
    with torch.no_grad():
        features = model(frames, num_frames=frames.shape[0])
    levels = reference["intermediates"]["backbone_features"]
    assert len(features) == len(levels) == 4
    diffs = [compare_to_reference(ours, ref) for ours, ref in zip(features, levels)]
    assert max(diffs) < FIXTURE_TOLERANCE, diffs


# ----------------------------------------------------------------------------------------------
# any input size: shapes, and the original's function (literal transcription as oracle)


@pytest.fixture(scope="module")
def random_swin_t() -> SwinBackbone:
    model = build_swin_backbone("swin_t_p4w7").eval()
    randomize_(model, seed=1)
    return model


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (70, 90, [(18, 23), (9, 12), (5, 6), (3, 3)]),
        (33, 50, [(9, 13), (5, 7), (3, 4), (2, 2)]),  # every stage smaller than/near the window
        (112, 84, [(28, 21), (14, 11), (7, 6), (4, 3)]),
    ],
)
def test_odd_sizes_match_original_function(random_swin_t, height, width, expected):
    model = random_swin_t
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.no_grad():
        features = model(images, num_frames=2)
        reference = original_swin_forward(model.body, images)
    assert [tuple(f.shape[-2:]) for f in features] == expected
    assert [f.shape[1] for f in features] == model.num_channels
    for ours, ref in zip(features, reference):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_small_map_still_uses_shifted_window(random_swin_t):
    """A 3x4 map padded to one 7x7 window: the original still rolls by 3 and masks; a block that
    dropped the shift (torchvision/timm policy) would give a different result."""
    torch.manual_seed(0)
    stage = random_swin_t.body.layers[3]
    x = torch.randn(1, 3, 4, stage.blocks[0].norm1.normalized_shape[0])
    window, shift = stage.effective_window((3, 4))
    assert window == (7, 7) and shift == (3, 3)
    mask = shifted_window_mask((7, 7), window, shift, x.device)
    with torch.no_grad():
        shifted = stage.blocks[1](x, window, shift, mask)
        unshifted = stage.blocks[1](x, window, (0, 0), None)
    assert (shifted - unshifted).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------
# window helpers


def test_relative_position_index_hand_computed_2x3():
    # entry (i, j) = (h_i - h_j + 1) * 5 + (w_i - w_j + 2) for tokens (0,0),(0,1),(0,2),(1,0),(1,1),(1,2)
    expected = torch.tensor(
        [
            [7, 6, 5, 2, 1, 0],
            [8, 7, 6, 3, 2, 1],
            [9, 8, 7, 4, 3, 2],
            [12, 11, 10, 7, 6, 5],
            [13, 12, 11, 8, 7, 6],
            [14, 13, 12, 9, 8, 7],
        ]
    )
    index = relative_position_index((2, 3))
    assert index.dtype == torch.int64
    assert torch.equal(index, expected)


def test_relative_position_index_buffers_hold_original_values(random_swin_t):
    model = random_swin_t
    expected = _original_index(7)
    assert expected[0, 0] == 6 * 13 + 6 and expected.max() == 168
    buffers = [b for k, b in model.state_dict().items() if k.endswith("relative_position_index")]
    assert len(buffers) == 12
    assert all(torch.equal(buffer, expected) for buffer in buffers)


def test_shifted_window_mask_hand_checked():
    # 4x4 map, window 2, shift 1: region labels (3 * row group + column group)
    #   0 0 1 2 / 0 0 1 2 / 3 3 4 5 / 6 6 7 8 ; windows in row-major order.
    mask = shifted_window_mask((4, 4), (2, 2), (1, 1), torch.device("cpu"))
    M = -100.0
    top_right = torch.tensor([[0, M, 0, M], [M, 0, M, 0], [0, M, 0, M], [M, 0, M, 0]])  # labels 1 2 1 2
    bottom_left = torch.tensor([[0, 0, M, M], [0, 0, M, M], [M, M, 0, 0], [M, M, 0, 0]])  # 3 3 6 6
    bottom_right = torch.full((4, 4), M).fill_diagonal_(0)  # 4 5 7 8
    expected = torch.stack([torch.zeros(4, 4), top_right, bottom_left, bottom_right])
    assert torch.equal(mask, expected)


def test_shifted_window_mask_zero_shift_dimension_not_split():
    # shift 0 along H: the slice [-0:] covers every row, so only columns split (labels 6 6 7 8).
    mask = shifted_window_mask((2, 4), (2, 2), (0, 1), torch.device("cpu"))
    M = -100.0
    right = torch.tensor([[0, M, 0, M], [M, 0, M, 0], [0, M, 0, M], [M, 0, M, 0]])
    assert torch.equal(mask, torch.stack([torch.zeros(4, 4), right]))


def test_window_partition_roundtrip_and_order():
    x = torch.arange(2 * 4 * 6 * 1, dtype=torch.float32).view(2, 4, 6, 1)
    windows = window_partition(x, (2, 3))
    assert windows.shape == (2 * 2 * 2, 6, 1)
    assert windows[1, :, 0].tolist() == [3, 4, 5, 9, 10, 11]  # second window of the first row
    assert torch.equal(window_reverse(windows, (2, 3), (4, 6)), x)
    square = torch.randn(3, 14, 21, 5)
    assert torch.equal(window_partition(square, (7, 7)), _original_partition(square, 7).view(-1, 49, 5))


# ----------------------------------------------------------------------------------------------
# activation checkpointing


def test_activation_checkpointing_same_values_and_gradients(monkeypatch):
    config = SwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = SwinBackbone(config).train()
    checkpointed = SwinBackbone(config, use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    images = torch.randn(2, 3, 40, 52)
    outputs = []
    for model in (plain, checkpointed):
        features = model(images, num_frames=2)
        sum(f.square().mean() for f in features).backward()
        outputs.append((features, model.body.patch_embed.proj.weight.grad.clone()))
    assert len(calls) == sum(config.depths)
    for a, b in zip(outputs[0][0], outputs[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(outputs[0][1], outputs[1][1])
