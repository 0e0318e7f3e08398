"""Sampling, captions, augmentation and collate: hand-computed answers and random invariants."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from referformer.data import clean_caption, collate_clips, pad_videos, swap_left_right
from referformer.data.base import make_target, mask_box
from referformer.data.sampling import centered_window, clip_starts, sample_train_clip
from referformer.data.transforms import (
    Check,
    Compose,
    PhotometricDistort,
    hflip,
    image_train_transforms,
    size_with_aspect_ratio,
    video_train_transforms,
    wrap_to_uint8,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_captions():
    assert clean_caption("A  brown DOG   running ") == "a brown dog running"
    text = "the left dog, right of the bright car"
    assert swap_left_right(text, whole_words=False) == "the right dog, left of the bleft car"  # original
    assert swap_left_right(text) == "the right dog, left of the bright car"
    assert swap_left_right("leftmost person on the right") == "leftmost person on the left"


def test_sizes_and_windows():
    assert size_with_aspect_ratio((96, 64), 416) == (416, 624)
    assert size_with_aspect_ratio((96, 64), 360, 640) == (360, 540)
    assert size_with_aspect_ratio((1280, 720), 512, 640) == (360, 640)
    assert size_with_aspect_ratio((64, 96), 64) == (96, 64)
    assert centered_window(11, 5, 0, 11) == [9, 10, 11, 11, 11]  # A2D, frame 12 of 12
    assert centered_window(1, 5, 1, 9) == [1, 1, 1, 2, 3]  # JHMDB, 1-based
    assert list(clip_starts(6, 5)) == [0, 5]


def _original_sampling(frame_id, vid_len, num_frames, local=True):
    """Transcription of the original ytvos.py __getitem__ sampling (the test oracle)."""
    sample_indx = [frame_id]
    if local:
        sample_id_before = random.randint(1, 3)
        sample_id_after = random.randint(1, 3)
        sample_indx.extend([max(0, frame_id - sample_id_before), min(vid_len - 1, frame_id + sample_id_after)])
    if num_frames > 3:
        all_inds = list(range(vid_len))
        global_inds = all_inds[:min(sample_indx)] + all_inds[max(sample_indx):]
        global_n = num_frames - len(sample_indx)
        if len(global_inds) > global_n:
            for s_id in random.sample(range(len(global_inds)), global_n):
                sample_indx.append(global_inds[s_id])
        elif vid_len >= global_n:
            for s_id in random.sample(range(vid_len), global_n):
                sample_indx.append(all_inds[s_id])
        else:
            for s_id in random.sample(range(vid_len), global_n - vid_len) + list(range(vid_len)):
                sample_indx.append(all_inds[s_id])
    sample_indx.sort()
    return sample_indx


@pytest.mark.parametrize("vid_len,num_frames", [(36, 5), (6, 5), (2, 5), (3, 4), (20, 8), (5, 1)])
def test_train_sampling_matches_original(vid_len, num_frames):
    for seed in range(30):
        local = num_frames != 1
        frame_id = seed % vid_len
        random.seed(seed)
        expected = _original_sampling(frame_id, vid_len, num_frames, local)
        random.seed(seed)
        got = sample_train_clip(frame_id, vid_len, num_frames, local=local)
        assert got == expected
        assert frame_id in got and got == sorted(got) and all(0 <= i < vid_len for i in got)
        assert len(got) >= num_frames


def test_boxes_flip_and_check():
    mask = np.zeros((6, 10), bool)
    mask[0:3, 3:6] = True
    assert mask_box(mask) == ([3.0, 0.0, 5.0, 2.0], 1)  # inclusive extents
    assert mask_box(np.zeros((4, 4), bool)) == ([0.0, 0.0, 0.0, 0.0], 0)
    frames = [Image.new("RGB", (10, 6))]
    target = make_target(mask[None], [0], "a", (10, 6))
    _, flipped = hflip(frames, target)
    assert flipped["boxes"].tolist() == [[5.0, 0.0, 7.0, 2.0]]  # [w - x2, y1, w - x1, y2]
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))
    degenerate = dict(target, boxes=torch.tensor([[3.0, 0.0, 3.0, 2.0]]))
    _, checked = Check()(frames, degenerate)
    assert checked["valid"].tolist() == [0] and checked["boxes"].tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_photometric_wraps_like_original():
    assert wrap_to_uint8(np.array([300.7, -10.2, 255.9, 12.0])).tolist() == [44, 246, 255, 12]
    np.random.seed(0)
    img = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    for clip in (False, True):
        out = PhotometricDistort(clip=clip)([img] * 3, {})[0]
        assert len(out) == 3 and all(o.size == (8, 8) for o in out)


def _synthetic_clip(rng: np.random.Generator, t: int = 3, h: int = 90, w: int = 120):
    """Red ellipses (the target) on a blue background; the object leaves the last frame."""
    frames, masks = [], []
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(t):
        cy, cx = rng.uniform(20, h - 20), rng.uniform(20, w - 20)
        m = ((yy - cy) / 12) ** 2 + ((xx - cx) / 18) ** 2 <= 1 if k < t - 1 else np.zeros((h, w), bool)
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 2] = 200
        img[m] = (255, 0, 0)
        frames.append(Image.fromarray(img))
        masks.append(m)
    return frames, make_target(np.stack(masks), [1] * t, "the red thing on the left", (w, h))


def test_random_augmentations_keep_frames_masks_boxes_consistent():
    rng = np.random.default_rng(0)
    steps = video_train_transforms(photometric=False).transforms[:-1]  # keep PIL frames / pixel boxes
    pipeline = Compose(steps)
    for seed in range(60):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        frames, target = _synthetic_clip(rng)
        out_frames, out = pipeline(frames, target)
        h, w = out["size"].tolist()
        assert all(f.size == (w, h) for f in out_frames) and out["masks"].shape == (3, h, w)
        for f, m, b, v in zip(out_frames, out["masks"], out["boxes"], out["valid"]):
            red = torch.from_numpy(np.asarray(f)[..., 0].astype(np.float32))
            if m.sum() > 50:  # mask and image moved together: the mask covers the red pixels
                assert red[m].mean() > 200 and red[~m].mean() < 60
            if v:
                ys, xs = torch.nonzero(m, as_tuple=True)
                tight = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
                assert torch.all((b - tight).abs() <= 0.025 * h + 1)
            else:
                assert bool((b[2:] <= b[:2]).any())
        assert out["valid"][-1] == 0  # absent object stays invisible
        assert out["caption"] in ("the red thing on the left", "the red thing on the right")


def test_image_transforms_and_normalisation():
    random.seed(1)
    torch.manual_seed(1)
    frames, target = _synthetic_clip(np.random.default_rng(1), t=1)
    clip, out = image_train_transforms()(frames, target)
    assert clip.shape[0] == 1 and clip.dtype == torch.float32
    assert out["boxes"].shape == (1, 4) and bool(((out["boxes"] >= 0) & (out["boxes"] <= 1)).all())


def test_collate_pads_to_multiple_of_32():
    a = torch.randn(5, 3, 100, 130)
    b = torch.randn(3, 3, 64, 96)
    batch = collate_clips([(a, {"id": 0}), (b, {"id": 1})])
    assert batch.frames.shape == (2, 5, 3, 128, 160)
    assert batch.padding_mask.shape == (2, 5, 128, 160)
    assert torch.equal(batch.frames[0, :, :, :100, :130], a)
    assert not batch.padding_mask[0, :, :100, :130].any() and batch.padding_mask[0, :, 100:].all()
    assert batch.padding_mask[1, 3:].all() and not batch.padding_mask[1, :3, :64, :96].any()
    assert batch.frames[1, :, :, 64:].abs().sum() == 0
    assert [t["id"] for t in batch.targets] == [0, 1]
    padded, mask = pad_videos([torch.zeros(1, 3, 64, 64)], size_divisibility=32)
    assert padded.shape == (1, 1, 3, 64, 64) and not mask.any()
