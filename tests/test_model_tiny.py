"""Tiny-config model: shapes on odd sizes, video/text/decoding split, batching of sentences, config."""

from __future__ import annotations

import pytest
import torch

from referformer.config import ModelConfig
from referformer.errors import UserError
from referformer.models import build_model
from referformer.models.mask_head import compute_locations, parse_dynamic_params
from referformer.presets import get_preset, tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_preset("tiny").config).eval()


def _frames(t=2, h=70, w=90, seed=0):
    return torch.randn(1, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


IDS = torch.tensor([[0, 10, 11, 12, 2, 1, 1], [0, 20, 21, 22, 23, 24, 2]])
MASK = (IDS != 1).long()


def test_shapes_on_odd_size(model):
    cfg = model.config
    with torch.no_grad():
        out = model(_frames(), IDS[:1], MASK[:1])
    # 70x90 -> stride-4 map 18x23 (conv1 stride 2 then max-pool, as torchvision's ResNet rounds)
    assert out["pred_logits"].shape == (1, 2, cfg.num_queries, 1)
    assert out["pred_boxes"].shape == (1, 2, cfg.num_queries, 4)
    assert out["pred_masks"].shape == (1, 2, cfg.num_queries, 18, 23)
    assert out["reference_points"].shape == (1, 2, cfg.num_queries, 2)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert torch.isfinite(out["pred_masks"]).all()


def test_decode_batches_sentences_over_one_clip(model):
    with torch.no_grad():
        visual = model.encode_video(_frames())
        both = model.decode(visual, model.encode_text(IDS, MASK))
        for i in range(2):
            n = int(MASK[i].sum())  # unpadded, as the original runs one sentence at a time
            single = model(_frames(), IDS[i:i + 1, :n], MASK[i:i + 1, :n])
            for key in ("pred_logits", "pred_boxes", "pred_masks", "reference_points"):
                torch.testing.assert_close(both[key][i:i + 1], single[key], atol=1e-4, rtol=1e-4)


def test_default_architecture_runs():
    torch.manual_seed(0)
    m = build_model(tiny_config().replace(with_box_refine=False, num_classes=65)).eval()
    assert m.class_embed[0] is m.class_embed[1] and m.transformer.decoder.bbox_embed is None
    with torch.no_grad():
        out = m(_frames(t=1, h=64, w=96), IDS[:1], MASK[:1])
    assert out["pred_logits"].shape == (1, 1, 3, 65)
    assert out["pred_masks"].shape == (1, 1, 3, 16, 24)


def test_padded_batch_of_two_clips(model):
    """Two clips of different sizes padded into one batch (nested_tensor_from_videos_list)."""
    frames = torch.zeros(2, 2, 3, 64, 96)
    mask = torch.ones(2, 2, 64, 96, dtype=torch.bool)
    frames[0] = _frames(h=64, w=96)[0]
    frames[1, :, :, :48, :64] = _frames(h=48, w=64, seed=1)[0]
    mask[0] = False
    mask[1, :, :48, :64] = False
    sizes = torch.tensor([[64, 96], [48, 64]])
    with torch.no_grad():
        out = model(frames, IDS, MASK, padding_mask=mask, image_sizes=sizes)
    assert out["pred_masks"].shape == (2, 2, 3, 16, 24)
    assert torch.isfinite(out["pred_masks"]).all()


def test_dynamic_params_layout():
    cfg = ModelConfig()
    assert cfg.num_dynamic_params == 2153
    assert cfg.dynamic_weight_nums == [258 * 8, 64, 8] and cfg.dynamic_bias_nums == [8, 8, 1]
    params = torch.arange(2 * 17, dtype=torch.float32).reshape(2, 17)
    w, b = parse_dynamic_params(params, 2, [3 * 2, 2 * 2, 2], [2, 2, 1])  # 6+4+2 weights, 2+2+1 biases
    assert [x.shape for x in w] == [(4, 3, 1, 1), (4, 2, 1, 1), (2, 2, 1, 1)]
    assert torch.equal(b[0], torch.tensor([12.0, 13.0, 29.0, 30.0]))
    assert torch.equal(b[2], torch.tensor([16.0, 33.0]))
    assert torch.equal(w[0][0, :, 0, 0], torch.tensor([0.0, 1.0, 2.0])) and w[1][0, 0, 0, 0] == 6.0
    loc = compute_locations(2, 3, 4, torch.device("cpu"))
    assert loc.tolist() == [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6]]


def test_config_json_round_trip_and_validation(tmp_path):
    cfg = tiny_config()
    cfg.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == cfg
    with pytest.raises(UserError, match="nheads"):
        ModelConfig(hidden_dim=256, nheads=7).validate()
    with pytest.raises(UserError, match="unknown backbone"):
        ModelConfig(backbone="resnet77").validate()
    with pytest.raises(UserError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"hidden": 3})
    base = ModelConfig().text_encoder
    assert (base.vocab_size, base.max_position_embeddings, base.type_vocab_size, base.layer_norm_eps) == \
        (50265, 514, 1, 1e-5)


def test_every_known_backbone_has_a_builder():
    """config's backbone names are the builders' names, and every preset's backbone is one of them."""
    import torchvision

    from referformer.config import KNOWN_BACKBONES, REFVOS_BACKBONES, RefVOSConfig
    from referformer.models.backbones.resnet import RESNET_CHANNELS
    from referformer.models.backbones.swin import SWIN_CONFIGS
    from referformer.models.backbones.video_swin import VIDEO_SWIN_CONFIGS
    from referformer.presets import list_presets

    assert set(KNOWN_BACKBONES) == set(RESNET_CHANNELS) | set(SWIN_CONFIGS) | set(VIDEO_SWIN_CONFIGS)
    assert all(callable(getattr(torchvision.models, name)) for name in REFVOS_BACKBONES)
    assert all(p.config.backbone in (REFVOS_BACKBONES if isinstance(p.config, RefVOSConfig) else KNOWN_BACKBONES)
               for p in list_presets())


def test_frame_indices_select_frames_after_the_backbone():
    """A2D / JHMDB: decoding only the annotated frame equals encoding the whole clip, keeping that frame's
    features and decoding one frame (the original's ``valid_indices``), and differs from decoding all frames."""
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    frames = torch.randn(2, 3, 3, 64, 96)
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
    mask = (ids != 1).long()
    picks = torch.tensor([[1], [2]])
    with torch.no_grad():
        out = model(frames, ids, mask, frame_indices=picks)
        visual = model.encode_video(frames)
        text = model.encode_text(ids, mask)
        selected = visual.select_frames(picks)
        manual = model.decode(selected, text)
        whole = model.decode(visual, text)
    assert selected.num_frames == 1 and selected.srcs[0].shape[0] == 2
    assert out["pred_masks"].shape[1] == 1
    torch.testing.assert_close(out["pred_masks"], manual["pred_masks"])
    # the kept features are those of frame 1 of clip 0 and frame 2 of clip 1 (flat index 3 + 2)
    torch.testing.assert_close(selected.srcs[0][0], visual.srcs[0][1])
    torch.testing.assert_close(selected.srcs[0][1], visual.srcs[0][3 + 2])
    # decoding the whole clip mixes frames (CM-FPN self-attention): not the same as the original's A2D path
    assert not torch.allclose(whole["pred_masks"][:, 1:2][0], out["pred_masks"][0], atol=1e-6)


def _perturb_later_frames(model, frames):
    """Outputs of frame 0 for ``frames`` and for the same clip with frames 1.. replaced."""
    other = frames.clone()
    other[:, 1:] = torch.randn(other[:, 1:].shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(frames, IDS[:1], MASK[:1]), model(other, IDS[:1], MASK[:1])


def test_with_an_image_backbone_scores_and_boxes_of_a_frame_see_only_that_frame():
    """ARCHITECTURE.md 5: the deformable encoder and decoder run per frame, so with a 2-D backbone a frame's
    query scores and boxes do not depend on the other frames; only its masks do (CM-FPN self-attention over
    the clip). The query is chosen by its score, so such a model cannot pick an object by its motion."""
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    a, b = _perturb_later_frames(model, _frames(t=3, h=64, w=96))
    torch.testing.assert_close(a["pred_logits"][:, 0], b["pred_logits"][:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(a["pred_boxes"][:, 0], b["pred_boxes"][:, 0], atol=1e-6, rtol=0)
    assert (a["pred_masks"][:, 0] - b["pred_masks"][:, 0]).abs().max() > 1e-3


def test_with_a_video_backbone_scores_of_a_frame_see_the_clip():
    """Video-Swin mixes frames inside its temporal windows: a frame's scores depend on its neighbours."""
    torch.manual_seed(0)
    model = build_model(tiny_config().replace(backbone="video_swin_t_p4w7", train_backbone=False)).eval()
    a, b = _perturb_later_frames(model, _frames(t=2, h=64, w=64))
    assert (a["pred_logits"][:, 0] - b["pred_logits"][:, 0]).abs().max() > 1e-4
