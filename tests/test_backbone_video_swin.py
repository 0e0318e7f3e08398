"""Video Swin backbone: official keys, fixture features, window shrinking on small maps."""

from __future__ import annotations

import math
from functools import reduce
from operator import mul

import pytest
import torch
import torch.nn.functional as F
from test_backbone_swin import (
    FIXTURE_TOLERANCE,
    compare_to_reference,
    load_generated_weights,
    randomize_,
    read_backbone_spec,
)

from referformer.errors import UserError
from referformer.models.backbones.video_swin import (
    VIDEO_SWIN_CONFIGS,
    VideoSwinBackbone,
    VideoSwinConfig,
    build_video_swin_backbone,
)
from referformer.models.backbones.window_attention import relative_position_index

# ----------------------------------------------------------------------------------------------
# a literal transcription of the original models/video_swin_transformer.py forward (oracle for
# sizes and frame counts the fixtures do not cover; it reads only our module's parameters)


def _original_index_3d(window):
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window[0] - 1
    rel[:, :, 1] += window[1] - 1
    rel[:, :, 2] += window[2] - 1
    rel[:, :, 0] *= (2 * window[1] - 1) * (2 * window[2] - 1)
    rel[:, :, 1] *= 2 * window[2] - 1
    return rel.sum(-1)


def _partition(x, ws):
    B, D, H, W, C = x.shape
    x = x.view(B, D // ws[0], ws[0], H // ws[1], ws[1], W // ws[2], ws[2], C)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous().view(-1, reduce(mul, ws), C)


def _reverse(windows, ws, B, D, H, W):
    x = windows.view(B, D // ws[0], H // ws[1], W // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).contiguous().view(B, D, H, W, -1)


def _get_window_size(x_size, window_size, shift_size):
    use_window, use_shift = list(window_size), list(shift_size)
    for i in range(len(x_size)):
        if x_size[i] <= window_size[i]:
            use_window[i] = x_size[i]
            use_shift[i] = 0
    return tuple(use_window), tuple(use_shift)


def _compute_mask(D, H, W, ws, ss):
    img_mask = torch.zeros((1, D, H, W, 1))
    cnt = 0
    for d in slice(-ws[0]), slice(-ws[0], -ss[0]), slice(-ss[0], None):
        for h in slice(-ws[1]), slice(-ws[1], -ss[1]), slice(-ss[1], None):
            for w in slice(-ws[2]), slice(-ws[2], -ss[2]), slice(-ss[2], None):
                img_mask[:, d, h, w, :] = cnt
                cnt += 1
    mask_windows = _partition(img_mask, ws).squeeze(-1)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, (-100.0)).masked_fill(attn_mask == 0, 0.0)


def _attention(attn, x, mask, full_window):
    B_, N, C = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(B_, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (C // heads) ** -0.5
    logits = q @ k.transpose(-2, -1)
    index = _original_index_3d(full_window)
    bias = attn.relative_position_bias_table[index[:N, :N].reshape(-1)].reshape(N, N, -1)
    logits = logits + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        logits = logits.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        logits = logits.view(-1, heads, N, N)
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C))


def _block(block, x, mask_matrix, full_window, block_shift):
    B, D, H, W, C = x.shape
    window_size, shift_size = _get_window_size((D, H, W), full_window, block_shift)
    shortcut = x
    x = block.norm1(x)
    pad_d1 = (window_size[0] - D % window_size[0]) % window_size[0]
    pad_b = (window_size[1] - H % window_size[1]) % window_size[1]
    pad_r = (window_size[2] - W % window_size[2]) % window_size[2]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b, 0, pad_d1))
    _, Dp, Hp, Wp, _ = x.shape
    if any(i > 0 for i in shift_size):
        shifted = torch.roll(x, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3))
        attn_mask = mask_matrix
    else:
        shifted, attn_mask = x, None
    windows = _attention(block.attn, _partition(shifted, window_size), attn_mask, full_window)
    shifted = _reverse(windows.view(-1, *(window_size + (C,))), window_size, B, Dp, Hp, Wp)
    x = torch.roll(shifted, shifts=shift_size, dims=(1, 2, 3)) if any(i > 0 for i in shift_size) else shifted
    x = x[:, :D, :H, :W, :].contiguous()
    x = shortcut + x
    return x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


def _merge(merge, x):
    B, D, H, W, C = x.shape
    if (H % 2 == 1) or (W % 2 == 1):
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x0, x1 = x[:, :, 0::2, 0::2, :], x[:, :, 1::2, 0::2, :]
    x2, x3 = x[:, :, 0::2, 1::2, :], x[:, :, 1::2, 1::2, :]
    return merge.reduction(merge.norm(torch.cat([x0, x1, x2, x3], -1)))


def original_video_swin_forward(body, frames, num_frames, full_window=(8, 7, 7)):
    shift = tuple(i // 2 for i in full_window)
    clips = frames.view(-1, num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4)  # b c t h w
    _, _, D, H, W = clips.shape
    if W % 4 != 0:
        clips = F.pad(clips, (0, 4 - W % 4))
    if H % 4 != 0:
        clips = F.pad(clips, (0, 0, 0, 4 - H % 4))
    x = body.patch_embed.proj(clips)
    D, Wh, Ww = x.shape[2:]
    x = body.patch_embed.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(-1, x.shape[1], D, Wh, Ww)
    outputs = []
    for i, layer in enumerate(body.layers):
        B, C, D, H, W = x.shape
        window_size, shift_size = _get_window_size((D, H, W), full_window, shift)
        x = x.permute(0, 2, 3, 4, 1)
        Dp, Hp, Wp = (int(math.ceil(s / w)) * w for s, w in zip((D, H, W), window_size))
        attn_mask = _compute_mask(Dp, Hp, Wp, window_size, shift_size)
        for b, block in enumerate(layer.blocks):
            x = _block(block, x, attn_mask, full_window, (0, 0, 0) if b % 2 == 0 else shift)
        x = x.permute(0, 4, 1, 2, 3)  # b c t h w
        outputs.append(x.permute(0, 2, 1, 3, 4).flatten(0, 1))  # (b t) c h w
        if i < len(body.downsamples):
            x = _merge(body.downsamples[i], x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
    return outputs


# ----------------------------------------------------------------------------------------------
# state-dict keys


@pytest.mark.parametrize("name", sorted(VIDEO_SWIN_CONFIGS))
@pytest.mark.parametrize("config", ["default", "release"])
def test_state_dict_keys_and_shapes_match_official(shared_reference, name, config):
    with torch.device("meta"):
        model = build_video_swin_backbone(name)
    ours = model.state_dict()
    spec = read_backbone_spec(shared_reference, name, config)
    expected = {entry.key.removeprefix("backbone.0."): entry for entry in spec}
    assert list(ours) == list(expected)
    for key, entry in expected.items():
        assert tuple(ours[key].shape) == entry.shape, key
        assert (ours[key].dtype == torch.int64) == (entry.dtype == "int64"), key


def test_num_channels_and_errors():
    with torch.device("meta"):
        assert build_video_swin_backbone("video_swin_t_p4w7").num_channels == [96, 192, 384, 768]
        assert build_video_swin_backbone("video_swin_b_p4w7").num_channels == [128, 256, 512, 1024]
    with pytest.raises(UserError, match="video_swin_t_p4w7"):
        build_video_swin_backbone("video_swin_l_p4w7")
    tiny = VideoSwinBackbone(VideoSwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)))
    with pytest.raises(UserError, match="num_frames=2"):
        tiny(torch.zeros(3, 3, 32, 32), num_frames=2)


def test_relative_position_index_full_window_values():
    index = relative_position_index((8, 7, 7))
    assert index.shape == (392, 392)
    assert torch.equal(index, _original_index_3d((8, 7, 7)))
    assert index[0, 0] == 7 * 169 + 6 * 13 + 6 and index.max() == 15 * 13 * 13 - 1
    # hand-computed small window (2, 1, 2): radices 3, 1, 3; tokens (0,0,0),(0,0,1),(1,0,0),(1,0,1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index((2, 1, 2)), expected)


# ----------------------------------------------------------------------------------------------
# fixtures of the original code


@pytest.fixture(scope="module")
def fixture_video_swin_t(shared_reference) -> VideoSwinBackbone:
    model = build_video_swin_backbone("video_swin_t_p4w7").eval()
    load_generated_weights(model, shared_reference, "video_swin_t_p4w7")
    return model


@pytest.mark.parametrize("config", ["default", "release"])
def test_backbone_features_match_fixture(shared_reference, fixture_video_swin_t, config):
    name = "video_swin_t_p4w7"
    fixtures = shared_reference / "model" / "fixtures"
    fixture = torch.load(fixtures / f"{name}_{config}_seed0.pt", weights_only=False)
    reference = torch.load(fixtures / f"{name}_{config}_seed0.intermediates.pt", weights_only=False)
    frames = fixture["inputs"]["frames"]
    with torch.no_grad():
        features = fixture_video_swin_t(frames, num_frames=frames.shape[0])
    levels = reference["intermediates"]["backbone_features"]
    assert len(features) == len(levels) == 4
    diffs = [compare_to_reference(ours, ref) for ours, ref in zip(features, levels)]
    assert max(diffs) < FIXTURE_TOLERANCE, diffs


# ----------------------------------------------------------------------------------------------
# any size / frame count: shapes and the original's function


@pytest.fixture(scope="module")
def random_video_swin_t() -> VideoSwinBackbone:
    model = build_video_swin_backbone("video_swin_t_p4w7").eval()
    randomize_(model, seed=3)
    return model


@pytest.mark.parametrize(
    ("batch", "frames", "height", "width", "expected"),
    [
        (1, 3, 70, 90, [(18, 23), (9, 12), (5, 6), (3, 3)]),
        (2, 1, 33, 50, [(9, 13), (5, 7), (3, 4), (2, 2)]),  # stages smaller than the window
        (1, 9, 32, 32, [(8, 8), (4, 4), (2, 2), (1, 1)]),  # T > 8: temporal shift + padding
    ],
)
def test_odd_sizes_match_original_function(random_video_swin_t, batch, frames, height, width, expected):
    model = random_video_swin_t
    generator = torch.Generator().manual_seed(height * frames)
    clip = torch.randn(batch * frames, 3, height, width, generator=generator)
    with torch.no_grad():
        features = model(clip, num_frames=frames)
        reference = original_video_swin_forward(model.body, clip, frames)
    assert [tuple(f.shape[-2:]) for f in features] == expected
    assert [f.shape[:2] for f in features] == [(batch * frames, c) for c in model.num_channels]
    for ours, ref in zip(features, reference):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_frames_of_different_clips_do_not_interact(random_video_swin_t):
    clip = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = random_video_swin_t(clip, num_frames=2)
        first = random_video_swin_t(clip[:2], num_frames=2)
        changed = clip.clone()
        changed[3] += 1
        perturbed = random_video_swin_t(changed, num_frames=2)
    for a, b, c in zip(together, first, perturbed):
        torch.testing.assert_close(a[:2], b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[:2], c[:2], atol=1e-5, rtol=1e-5)  # clip 1 untouched
        assert (a[2] - c[2]).abs().max() > 1e-3  # time does meet time within a clip


def test_window_shrinks_with_zero_shift_on_small_maps(random_video_swin_t):
    stage = random_video_swin_t.body.layers[2]
    assert stage.effective_window((2, 6, 8)) == ((2, 6, 7), (0, 0, 3))
    assert stage.effective_window((9, 8, 8)) == ((8, 7, 7), (4, 3, 3))
    assert stage.effective_window((8, 7, 7)) == ((8, 7, 7), (0, 0, 0))


def test_activation_checkpointing_same_values_and_gradients():
    config = VideoSwinConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = VideoSwinBackbone(config).train()
    checkpointed = VideoSwinBackbone(config, use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    clip = torch.randn(3, 3, 36, 44)
    results = []
    for model in (plain, checkpointed):
        features = model(clip, num_frames=3)
        sum(f.square().mean() for f in features).backward()
        results.append((features, model.body.patch_embed.proj.weight.grad.clone()))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][1], results[1][1])
