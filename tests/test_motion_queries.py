"""Motion-aware queries (``ModelConfig.motion_queries``, :mod:`referformer.models.motion`).

* With the option (and a trained, i.e. non-zero, output projection) a frame's query scores depend on
  the other frames of the clip; its boxes still do not (only the class head reads the trajectory).
* Without it the original's invariant holds: frame 0's scores and boxes ignore the later frames.
* A freshly built model with the option scores exactly like the same-seed model without it (zero output
  projection, built after every other module), and the layer learns (it gets gradients).
* Every official preset keeps the option off (and the other new options at the original's values).
"""

from __future__ import annotations

import pytest
import torch

from referformer.models import build_model
from referformer.models.motion import VELOCITY_SCALE, trajectory_features
from referformer.presets import tiny_config

IDS = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
MASK = (IDS != 1).long()


def _frames(t: int = 3, h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.randn(1, t, 3, h, w, generator=torch.Generator().manual_seed(3))


def _motion_model(trained: bool = True):
    torch.manual_seed(0)
    model = build_model(tiny_config().replace(motion_queries=True)).eval()
    if trained:  # stand-in for training: a non-zero output projection
        torch.nn.init.normal_(model.motion_encoder.out_proj.weight, std=0.5)
    return model


def _frame0_with_later_frames_changed(model, frames):
    other = frames.clone()
    other[:, 1:] = torch.randn(other[:, 1:].shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(frames, IDS[:1], MASK[:1]), model(other, IDS[:1], MASK[:1])


def test_with_motion_queries_frame_scores_see_the_clip():
    a, b = _frame0_with_later_frames_changed(_motion_model(), _frames())
    assert (a["pred_logits"][:, 0] - b["pred_logits"][:, 0]).abs().max() > 1e-3
    for aux_a, aux_b in zip(a["aux_outputs"], b["aux_outputs"]):  # every decoder layer's scores
        assert (aux_a["pred_logits"][:, 0] - aux_b["pred_logits"][:, 0]).abs().max() > 1e-3
    # boxes (and so the reference points of the masks) stay per frame
    torch.testing.assert_close(a["pred_boxes"][:, 0], b["pred_boxes"][:, 0], atol=1e-6, rtol=0)


def test_without_motion_queries_frame_scores_see_only_their_frame():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    assert model.motion_encoder is None
    a, b = _frame0_with_later_frames_changed(model, _frames())
    torch.testing.assert_close(a["pred_logits"][:, 0], b["pred_logits"][:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(a["pred_boxes"][:, 0], b["pred_boxes"][:, 0], atol=1e-6, rtol=0)


def test_fresh_motion_layer_changes_nothing_and_learns():
    torch.manual_seed(0)
    plain = build_model(tiny_config()).eval()
    motion = _motion_model(trained=False)
    extra = set(motion.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("motion_encoder.") for k in extra)
    assert set(plain.state_dict()) <= set(motion.state_dict())
    for k, v in plain.state_dict().items():  # drawn as without the option
        assert torch.equal(v, motion.state_dict()[k]), k
    frames = _frames()
    with torch.no_grad():
        a, b = plain(frames, IDS, MASK), motion(frames, IDS, MASK)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)

    motion.train()
    motion(frames, IDS, MASK)["pred_logits"].sum().backward()
    grad = motion.motion_encoder.out_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_decoding_sentences_together_equals_one_at_a_time():
    model = _motion_model()
    frames = _frames(t=4)
    with torch.no_grad():
        visual = model.encode_video(frames)
        both = model.decode(visual, model.encode_text(IDS, MASK))
        for i in range(2):
            one = model.decode(visual, model.encode_text(IDS[i:i + 1, :int(MASK[i].sum())],
                                                         MASK[i:i + 1, :int(MASK[i].sum())]))
            torch.testing.assert_close(both["pred_logits"][i:i + 1], one["pred_logits"], atol=1e-5, rtol=1e-5)


def test_single_frame_clips_run():
    with torch.no_grad():
        out = _motion_model()(_frames(t=1), IDS[:1], MASK[:1])
    assert out["pred_logits"].shape == (1, 1, 3, 1)


def test_trajectory_features():
    boxes = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.2, 0.5, 0.2, 0.2], [0.4, 0.5, 0.2, 0.2]]).view(1, 3, 1, 4)
    feats = trajectory_features(boxes)
    assert feats.shape == (1, 3, 1, 12)
    torch.testing.assert_close(feats[0, :, 0, :4], boxes[0, :, 0])
    torch.testing.assert_close(feats[0, :, 0, 4], torch.tensor([0.0, 0.1, 0.2]) * VELOCITY_SCALE)  # from previous
    torch.testing.assert_close(feats[0, :, 0, 8], torch.tensor([0.1, 0.2, 0.0]) * VELOCITY_SCALE)  # to next


def test_official_presets_keep_the_new_options_off():
    from referformer.config import KNOWN_BACKBONES, ModelConfig, TextEncoderConfig
    from referformer.presets import list_presets

    presets = [p for p in list_presets() if isinstance(p.config, ModelConfig)]
    assert len(presets) > 20
    for preset in presets:
        config = preset.config
        assert not config.motion_queries and config.sentence_embedding == "pooler", preset.name
        assert isinstance(config.text_encoder, TextEncoderConfig) and config.backbone in KNOWN_BACKBONES
        assert "model_type" not in config.to_dict()["text_encoder"]  # config.json as before


@pytest.mark.parametrize("bad", [{"sentence_embedding": "max"}, {"backbone": "efficientnet_b7"}])
def test_validation_names_the_field(bad):
    from referformer.errors import UserError

    with pytest.raises(UserError, match=next(iter(bad))):
        tiny_config().replace(**bad).validate()
