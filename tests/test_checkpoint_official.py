"""Official checkpoint layout: key/shape equality with the TSV specs, loading rules and error messages."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest
import torch

from referformer.checkpoint import (infer_architecture, load_official_checkpoint, load_official_state_dict,
                                    read_official_checkpoint, to_official_state_dict)
from referformer.errors import CheckpointMismatchError, UserError
from referformer.models import build_model
from referformer.presets import get_preset, tiny_config


def _read_tsv(path):
    rows = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header[:4] == ["key", "shape", "dtype", "tied_to"]
        for line in f:
            cols = line.rstrip("\n").split("\t")
            shape = tuple(int(s) for s in cols[1].split(",")) if cols[1] else ()
            rows[cols[0]] = (shape, cols[3] or None)
    return rows


OFFICIAL_BACKBONES = ("resnet50", "resnet101", "swin_t_p4w7", "swin_s_p4w7", "swin_b_p4w7", "swin_l_p4w7",
                      "video_swin_t_p4w7", "video_swin_s_p4w7", "video_swin_b_p4w7")


@pytest.mark.parametrize("backbone,config,tsv", [
    (backbone, config, f"keys_{backbone}{'_release' if config == 'release' else ''}.tsv")
    for backbone in OFFICIAL_BACKBONES for config in ("default", "release")
])
def test_state_dict_matches_official_spec(shared_reference, backbone, config, tsv):
    spec = _read_tsv(shared_reference / "model" / tsv)
    model = build_model(get_preset(f"{backbone}-{config}").config, init_weights=False)
    sd = to_official_state_dict(model)
    assert set(sd) == set(spec)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: s for k, (s, _) in spec.items()}
    # tied keys of the spec are one tensor in our model, and nothing else is
    ours = defaultdict(set)
    for k, v in sd.items():
        ours[(v.data_ptr(), tuple(v.shape))].add(k)
    ours_groups = {frozenset(g) for g in ours.values() if len(g) > 1}
    spec_groups = defaultdict(set)
    for k, (_, tied) in spec.items():
        if tied:
            spec_groups[tied].update({tied, k})
    assert ours_groups == {frozenset(g) for g in spec_groups.values()}


def _tiny(**changes):
    return build_model(tiny_config().replace(**changes))


@pytest.fixture(scope="module")
def tiny_release():
    torch.manual_seed(0)
    return _tiny().eval()


def test_roundtrip_with_extras(tiny_release, tmp_path):
    sd = to_official_state_dict(tiny_release)
    sd = {k: v.clone() for k, v in sd.items()}
    sd["text_encoder.embeddings.position_ids"] = torch.arange(66)[None]
    sd["backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "args": argparse.Namespace(backbone="resnet18"), "epoch": 3}, path)
    other = _tiny()
    load_official_checkpoint(other, path)
    for k, v in tiny_release.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_release_checkpoint_into_default_preset_names_cause(tiny_release):
    sd = to_official_state_dict(tiny_release)
    with pytest.raises(CheckpointMismatchError, match="per-layer box heads.*release preset"):
        load_official_state_dict(_tiny(with_box_refine=False), sd)


def test_default_checkpoint_into_release_preset_names_cause():
    sd = to_official_state_dict(_tiny(with_box_refine=False))
    with pytest.raises(CheckpointMismatchError, match="no per-layer box heads.*default preset"):
        load_official_state_dict(_tiny(), sd)


def test_class_count_and_backbone_mismatch(tiny_release):
    sd = to_official_state_dict(tiny_release)
    with pytest.raises(CheckpointMismatchError, match="1 class.*model 65"):
        load_official_state_dict(_tiny(num_classes=65), sd)
    with pytest.raises(CheckpointMismatchError, match="looks like resnet18.*resnet34"):
        load_official_state_dict(_tiny(backbone="resnet34"), sd)


def test_missing_key_is_named(tiny_release):
    sd = dict(to_official_state_dict(tiny_release))
    del sd["controller.layers.0.weight"]
    with pytest.raises(CheckpointMismatchError, match="1 key\\(s\\) missing.*controller.layers.0.weight"):
        load_official_state_dict(_tiny(), sd)


def test_tied_keys_must_agree(tiny_release):
    sd = {k: v.clone() for k, v in to_official_state_dict(tiny_release).items()}
    sd["transformer.decoder.bbox_embed.1.layers.0.weight"] += 1.0
    with pytest.raises(CheckpointMismatchError, match="tied keys"):
        load_official_state_dict(_tiny(), sd)


class Opaque:
    """An arbitrary class: not allow-listed, so weights_only loading must refuse it."""


def test_unsafe_pickle_refused_by_default(tmp_path):
    path = tmp_path / "weird.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "junk": Opaque()}, path)
    with pytest.raises(UserError, match="--unsafe-load"):
        read_official_checkpoint(path)
    assert set(read_official_checkpoint(path, unsafe_load=True)) == {"x"}


def test_infer_architecture(tiny_release):
    info = infer_architecture(to_official_state_dict(tiny_release))
    assert info == {"backbone": "resnet18", "with_box_refine": True, "num_classes": 1}


class _WithIndex(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("relative_position_index", torch.arange(6).reshape(2, 3))


def test_relative_position_index_optional_but_checked(tiny_release):
    sd = dict(to_official_state_dict(tiny_release))
    model = _tiny()
    model.backbone.body.add_module("extra", _WithIndex())  # stands in for a Swin attention block
    key = "backbone.0.body.extra.relative_position_index"
    load_official_state_dict(model, sd)  # absent: the module keeps its own constant
    assert torch.equal(model.backbone.body.extra.relative_position_index, torch.arange(6).reshape(2, 3))
    load_official_state_dict(model, {**sd, key: torch.arange(6).reshape(2, 3)})  # present and equal
    with pytest.raises(CheckpointMismatchError, match="relative_position_index differs"):
        load_official_state_dict(model, {**sd, key: torch.zeros(2, 3, dtype=torch.long)})


def test_infer_architecture_of_every_official_spec(shared_reference):
    specs = sorted((shared_reference / "model").glob("keys_*.tsv"))
    assert len(specs) == 18
    for path in specs:
        rows = _read_tsv(path)
        sd = {k: torch.empty(shape, device="meta") for k, (shape, _) in rows.items()}
        name = path.stem[len("keys_"):]
        release = name.endswith("_release")
        backbone = name[: -len("_release")] if release else name
        assert infer_architecture(sd) == {"backbone": backbone, "with_box_refine": release,
                                          "num_classes": 1 if release else 65}, path.name


def test_garbage_file_is_not_called_unsafe(tmp_path):
    """Random bytes and text are reported as unreadable checkpoints, not as unsafe pickles."""
    for name, payload in (("random.pth", bytes(range(256)) * 4), ("text.pth", b"hello, not a checkpoint")):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(UserError, match="is not a readable PyTorch checkpoint") as info:
            read_official_checkpoint(path)
        assert "--unsafe-load" not in str(info.value)
