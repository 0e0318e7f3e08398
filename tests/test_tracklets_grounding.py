"""F_Gnd of the top-down system (referformer.models.tracklets.grounding): tracklet tokens by masked
average pooling, boxes, the per-frame softmax over tracklets, and small trainings whose answer only
the sentence (or only the motion) can decide."""

from __future__ import annotations

import torch

from referformer.models.tracklets import GroundingTransformer, grounding_loss, masked_average_pool, normalized_boxes


def test_masked_average_pool_on_a_hand_made_feature_map() -> None:
    # one frame, 2 channels, 2 x 2 cells: channel 0 = [[1, 2], [3, 4]], channel 1 = [[10, 20], [30, 40]]
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])  # [T=1, C=2, 2, 2]
    masks = torch.zeros((3, 1, 4, 4), dtype=torch.bool)  # masks at 4 x 4: each cell is 2 x 2 pixels
    masks[0, 0, :2, :2] = True  # exactly the top-left cell -> (1, 10)
    masks[1, 0, :2, :] = True  # the top row of cells -> ((1 + 2) / 2, (10 + 20) / 2) = (1.5, 15)
    masks[2, 0, 0, 0] = True  # 1 px of the top-left cell: weight 1/4 there and 0 elsewhere -> (1, 10)
    masks[2, 0, 3, 3] = True  # and 1 px of the bottom-right: weights 1/4, 1/4 -> ((1 + 4) / 2, (10 + 40) / 2)
    tokens, present = masked_average_pool(features, masks)
    assert tokens.shape == (3, 1, 2)
    assert torch.allclose(tokens[0, 0], torch.tensor([1.0, 10.0]))
    assert torch.allclose(tokens[1, 0], torch.tensor([1.5, 15.0]))
    assert torch.allclose(tokens[2, 0], torch.tensor([2.5, 25.0]))
    assert present.all()
    # an empty mask: a zero token and present False
    tokens, present = masked_average_pool(features, torch.zeros((1, 1, 4, 4), dtype=torch.bool))
    assert torch.equal(tokens, torch.zeros((1, 1, 2))) and not present.any()


def test_normalized_boxes_in_fractions_of_the_frame() -> None:
    masks = torch.zeros((2, 4, 8), dtype=torch.bool)
    masks[0, 1:3, 2:6] = True  # x 2..6 of 8, y 1..3 of 4 -> cx 0.5, cy 0.5, w 0.5, h 0.5
    boxes = normalized_boxes(masks)
    assert torch.allclose(boxes[0], torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0]))
    assert torch.equal(boxes[1], torch.zeros(5))  # empty: zeros, present 0


def _tiny(motion: bool = False, visual_dim: int = 8, text_dim: int = 8) -> GroundingTransformer:
    return GroundingTransformer(visual_dim, text_dim, d_model=32, num_layers=1, num_heads=4, ffn_dim=64, mlp_dim=32,
                                dropout=0.0, motion=motion, motion_samples=4)


def test_softmax_over_tracklets_sums_to_one_per_frame_with_padding_ignored() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    tokens = torch.randn(2, 4, 3, 8)  # B=2 sentences, P=4 slots, T=3 frames
    words = torch.randn(2, 5, 8)
    word_padding = torch.tensor([[False] * 5, [False, False, True, True, True]])
    tracklet_padding = torch.tensor([[False, False, False, True], [False, True, False, True]])
    out = model(tokens, words, word_padding, tracklet_padding)
    assert out.frame_scores.shape == (2, 4, 3) and out.scores.shape == (2, 4)
    assert torch.allclose(out.frame_scores.sum(1), torch.ones(2, 3))
    assert torch.equal(out.frame_scores[tracklet_padding], torch.zeros(3, 3))
    # padded slots (whatever they hold) change nothing for the real tracklets
    tokens2 = tokens.clone()
    tokens2[tracklet_padding] = 100.0
    words2 = words.clone()
    words2[1, 2:] = -7.0
    out2 = model(tokens2, words2, word_padding, tracklet_padding)
    assert torch.allclose(out.frame_scores, out2.frame_scores, atol=1e-6)
    assert torch.allclose(out.scores, out.frame_scores.mean(2))


def _train(model: GroundingTransformer, batch, steps: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        tokens, words, boxes, target = batch()
        loss = grounding_loss(model(tokens, words, boxes=boxes).logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_grounding_learns_what_only_the_sentence_decides(one_thread) -> None:
    torch.manual_seed(0)
    u, v = torch.randn(8), torch.randn(8)  # the look of the two kinds of object
    word_a, word_b, word_the = torch.randn(8), torch.randn(8), torch.randn(8)  # "A" -> the u object, "B" -> v

    def batch(size: int = 32):
        swap = torch.rand(size) < 0.5  # which slot holds the u object
        says_a = torch.rand(size) < 0.5
        first = torch.where(swap[:, None], v, u)
        second = torch.where(swap[:, None], u, v)
        tokens = torch.stack([first, second], 1)[:, :, None].expand(-1, -1, 3, -1) + 0.1 * torch.randn(size, 2, 3, 8)
        words = torch.stack([word_the.expand(size, -1), torch.where(says_a[:, None], word_a, word_b)], 1)
        target = (swap == says_a).long()  # u is in slot 1 when swapped; "A" wants u
        return tokens, words, None, target

    model = _tiny()
    _train(model, batch, 200)
    with torch.no_grad():
        tokens, words, _, target = batch(64)
        out = model(tokens, words)
        assert torch.equal(out.scores.argmax(1), target)
        assert (out.frame_scores.argmax(1) == target[:, None]).all()  # every frame agrees
        # the same clip with both sentences: each gets its own object
        pair = model(tokens[:1].expand(2, -1, -1, -1), torch.stack([torch.stack([word_the, word_a]),
                                                                   torch.stack([word_the, word_b])]))
        assert pair.scores[0].argmax() != pair.scores[1].argmax()
        # a sentence alone gives the same scores as among several (rows are independent)
        alone = model(tokens[:1], torch.stack([word_the, word_a])[None])
        assert torch.allclose(alone.scores, pair.scores[:1], atol=1e-6)


def _motion_batch(size: int = 32, frames: int = 5):
    """Two tracklets with identical tokens; one moves right by 0.3 of the frame, the other left by 0.3,
    from random starts: at the middle frame they may be anywhere, only the trajectory tells them apart."""
    look = torch.randn(size, 1, 1, 8).expand(-1, 2, frames, -1)
    right_slot = (torch.rand(size) < 0.5).long()
    says_right = torch.rand(size) < 0.5
    time = torch.linspace(0, 1, frames)
    start = 0.2 + 0.6 * torch.rand(size, 2)
    direction = torch.where(torch.arange(2)[None] == right_slot[:, None], 1.0, -1.0)  # [B, 2]
    cx = (start[:, :, None] + 0.3 * direction[:, :, None] * (time - 0.5)).clamp(0, 1)  # [B, 2, T]
    boxes = torch.stack([cx, torch.full_like(cx, 0.5), torch.full_like(cx, 0.2), torch.full_like(cx, 0.2),
                         torch.ones_like(cx)], dim=-1)
    word_right, word_left = torch.ones(8), -torch.ones(8)
    words = torch.where(says_right[:, None], word_right, word_left)[:, None]  # [B, 1, 8]
    target = torch.where(says_right, right_slot, 1 - right_slot)
    return look.contiguous(), words, boxes, target


def test_motion_option_grounds_what_only_the_trajectory_decides(one_thread) -> None:
    torch.manual_seed(0)
    with_motion = _tiny(motion=True)
    _train(with_motion, _motion_batch, 300)
    torch.manual_seed(1)
    tokens, words, boxes, target = _motion_batch(64)
    with torch.no_grad():
        assert torch.equal(with_motion(tokens, words, boxes=boxes).scores.argmax(1), target)
        # the paper's token (appearance alone) cannot: identical tokens get identical scores, 1/2 each,
        # whatever the training
        torch.manual_seed(0)
        without = _tiny(motion=False)
    _train(without, _motion_batch, 20)
    with torch.no_grad():
        out = without(tokens, words)
    assert torch.allclose(out.frame_scores, torch.full_like(out.frame_scores, 0.5), atol=1e-5)
