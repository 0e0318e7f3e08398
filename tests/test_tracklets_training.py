"""Training the tracklet-grounding system (referformer.engine.tracklets_training / tracklets_data): the
paper's target rule on hand-made masks, the per-frame instances, a few steps of each recipe on a tiny
random model (the loss falls, a resumed run continues exactly), the grounding stage initialised from the
segmenter run, and the export loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_tracklets_model import _tiny_config

from referformer.checkpoint import load_model
from referformer.data.vos import read_vos_split
from referformer.engine.recipes import get_recipe
from referformer.engine.trainer import Trainer
from referformer.engine.tracklets_data import FrameInstances, GroundTruthTracklets, target_tracklet
from referformer.engine.tracklets_training import export_tracklets, tracklets_components
from referformer.engine.wiring import TrainingComponents
from referformer.models.tracklets import TrackletGrounder


@pytest.fixture(scope="module")
def synthetic_root(make_synthetic_root):
    return make_synthetic_root(3, 2, ["train"])


def _trainer(recipe: str, root, out, tokenizer=None, resume=None, **changes) -> Trainer:
    config = get_recipe(recipe).replace(log_every=100, **changes)
    parts = TrainingComponents(**tracklets_components(config, root, tokenizer, model_config=_tiny_config(),
                                                      pretrained=False))
    return Trainer(config, parts.model_factory, parts.dataset, out, parts.collate_fn, forward=parts.forward,
                   init_convert=parts.init_convert, criterion_factory=parts.criterion_factory, show_progress=False,
                   resume=resume)


def test_target_is_the_tracklet_of_highest_tracklet_iou() -> None:
    # 2 frames of 4 x 4; ground truth: column 0 on both frames (8 pixels)
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[:, :, 0] = True
    tracklets = torch.zeros(3, 2, 4, 4, dtype=torch.bool)
    tracklets[0, 0, :, 0] = True  # right on frame 0 only: 4 / 8 = 0.5
    tracklets[1, :, :, 0:2] = True  # columns 0-1 on both frames: 8 / 16 = 0.5 ... tie with 0: lower index
    tracklets[2, :, 1:, 0] = True  # 3 rows on both frames: 6 / 8 = 0.75, the best
    assert target_tracklet(tracklets, gt) == 2
    assert target_tracklet(tracklets[:2], gt) == 0  # a tie goes to the lower index
    assert target_tracklet(tracklets[1:2], gt) == 0


def test_frame_instances_are_every_annotated_object(synthetic_root) -> None:
    videos = read_vos_split(synthetic_root, "train", "synthetic")
    dataset = FrameInstances(videos, flip=False)
    assert len(dataset) == sum(len(v.annotated()) for v in videos) == 20
    image, target = dataset[0]
    labels = np.asarray(videos[0].labels(0))
    ids = [i for i in np.unique(labels) if 0 < i < 255]
    assert image.shape == (3, 96, 128) and 0 <= image.min() and image.max() <= 1
    assert target["masks"].shape == (len(ids), 96, 128) and target["labels"].tolist() == [1] * len(ids)
    for mask, box, i in zip(target["masks"], target["boxes"], ids):
        assert torch.equal(mask.bool(), torch.from_numpy(labels == i))
        ys, xs = np.nonzero(labels == i)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # pixel edges


def test_segmenter_recipe_trains_only_the_segmenter_and_resumes(synthetic_root, tmp_path, one_thread) -> None:
    trainer = _trainer("tracklets-tiny-segmenter", synthetic_root, tmp_path / "seg", max_steps=8, batch_size=2,
                       epochs=100)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("segmenter.") for n in trainable)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith(("visual.", "grounding."))}
    trainer.fit()
    losses = [row["loss"] for row in trainer.history]
    assert len(losses) == 8 and set(trainer.history[0]) >= {"loss_objectness", "loss_mask", "loss_classifier"}
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    after = trainer.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # the rest stays frozen
    resumed = _trainer("tracklets-tiny-segmenter", synthetic_root, tmp_path / "seg", max_steps=10, batch_size=2,
                       epochs=100, resume=tmp_path / "seg")
    assert resumed.progress.global_step == 8
    resumed.fit()
    assert [row["global_step"] for row in resumed.history] == [9, 10]


def test_grounding_recipe_from_the_segmenter_run_learns_resumes_and_exports(synthetic_root, tmp_path,
                                                                             one_thread) -> None:
    tokenizer = synthetic_root / "tokenizer"
    seg = _trainer("tracklets-tiny-segmenter", synthetic_root, tmp_path / "seg", max_steps=1, batch_size=2)
    seg.fit()
    options = dict(max_steps=120, batch_size=4, epochs=100, num_frames=6,
                   init_from=str(tmp_path / "seg"), **{"optimizer.lr": 1e-3})
    whole = _trainer("tracklets-tiny-grounding", synthetic_root, tmp_path / "gnd", tokenizer, **options)
    trainable = {n for n, p in whole.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("grounding.") for n in trainable)
    seg_state = seg.model.state_dict()
    assert all(torch.equal(v, seg_state[k]) for k, v in whole.model.state_dict().items() if k.startswith("segmenter."))
    item = whole.dataset[0]  # the cache: every object of the video is a tracklet
    assert item["tokens"].shape[1:] == (6, 40) and item["boxes"].shape[-1] == 5 and item["words"].shape[-1] == 32
    whole.fit()
    losses = [row["loss"] for row in whole.history]
    # 24 expressions of 2 videos (4 objects each): at chance (ln 4) for ~60 steps, then it overfits;
    # measured: 1.39 over the first 10 steps, about 0.45 over the last 10
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    # stopped after 60 steps and resumed: the same 120 steps
    half = _trainer("tracklets-tiny-grounding", synthetic_root, tmp_path / "half", tokenizer,
                    **{**options, "max_steps": 60})
    half.fit()
    rest = _trainer("tracklets-tiny-grounding", synthetic_root, tmp_path / "half", tokenizer,
                    **options, resume=tmp_path / "half")
    rest.fit()
    assert np.allclose([r["loss"] for r in rest.history], losses[60:], atol=1e-5)
    folder = export_tracklets(tmp_path / "gnd" / "last.pth", tmp_path / "model", _tiny_config(),
                              tokenizer_dir=tokenizer, half=True)
    loaded = load_model(folder)
    assert isinstance(loaded, TrackletGrounder) and (folder / "tokenizer" / "tokenizer.json").is_file()
    ours = whole.model.state_dict()
    assert all(torch.allclose(v.float(), ours[k].float(), atol=1e-2, rtol=1e-2) for k, v in loaded.state_dict().items())


def test_mask_noise_changes_the_tracklets_not_the_targets(synthetic_root) -> None:
    from referformer.synthetic import build_synthetic_tokenizer  # noqa: F401 (the root already has one)
    from referformer.text import load_tokenizer

    torch.manual_seed(0)
    model = TrackletGrounder(_tiny_config()).eval()
    exact = GroundTruthTracklets(synthetic_root, num_frames=10)
    noisy = GroundTruthTracklets(synthetic_root, num_frames=10, mask_noise=2)
    for dataset in (exact, noisy):
        dataset.bind(model, load_tokenizer(synthetic_root / "tokenizer"))
        dataset.build_cache()
    assert [t for *_, t in exact._items] == [t for *_, t in noisy._items]
    video = exact.expressions[0].video_id
    assert not torch.equal(exact._videos[video]["boxes"], noisy._videos[video]["boxes"])
