"""The pruners' functional interface (`select` / `compress` / `reset`), as a streaming session uses it."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.tokens import Selection, TokenPruner
from omnipress.tokens.scoring import (
    low_variance_channels,
    mean_attention_received,
    stc_scores,
    vidcom2_budgets,
    vidcom2_scores,
)
from omnipress.tokens.stc_pruner import STCMemory, stc_prune

ALL = [
    op.STCPruner(tokens_per_frame=5),
    op.STCPruner(tokens_per_frame=5, strategy="dual_anchor"),
    op.VisionZipPruner(tokens_per_frame=5, contextual=2),
    op.VidCom2Pruner(tokens_per_frame=5),
    op.DivPrunePruner(tokens_per_frame=5),
    op.UniformPruner(tokens_per_frame=5),
    op.RandomPruner(tokens_per_frame=5, seed=3),
]


def _video(frames: int = 4, tokens: int = 16, dim: int = 12, seed: int = 0) -> torch.Tensor:
    """Frames of a drifting scene: a shared background plus per-frame motion and noise."""
    gen = torch.Generator().manual_seed(seed)
    background = torch.randn(tokens, dim, generator=gen)
    drift = torch.randn(frames, 1, dim, generator=gen).cumsum(0) * 0.3
    return background + drift + 0.5 * torch.randn(frames, tokens, dim, generator=gen)


@pytest.mark.parametrize("pruner", ALL, ids=lambda p: f"{p.name}-{getattr(p, 'strategy', '')}")
def test_select_gives_frames_by_k_ascending_indices(pruner: TokenPruner):
    pruner.reset()
    chunk = _video()
    selection = pruner.compress(chunk)
    assert isinstance(selection, Selection)
    indices = selection.indices
    if isinstance(pruner, op.VidCom2Pruner):  # per-frame budgets: rows padded with -1
        counts = selection.counts
        assert indices.shape[0] == 4 and int(counts.max()) == indices.shape[1]
        assert abs(int(counts.sum()) - 4 * 5) <= 2
    else:
        assert indices.shape == (4, 5) and bool((selection.counts == 5).all())
    for row, count in zip(indices, selection.counts.tolist()):
        real = row[:count]
        assert bool((real[1:] > real[:-1]).all()) and int(real.min()) >= 0 and int(real.max()) < 16
        assert bool((row[count:] == -1).all())
    assert selection.features.shape == (*indices.shape, 12)
    if not isinstance(pruner, op.VisionZipPruner):  # gathered from the full-width features
        for f in range(4):
            count = int(selection.counts[f])
            torch.testing.assert_close(selection.features[f, :count], chunk[f, indices[f, :count]])
    assert selection.mask(16).sum().item() == int(selection.counts.sum())
    pruner.reset()
    assert torch.equal(pruner.select(chunk), indices)  # select = compress().indices, reproducible after reset


def test_stc_keeps_the_lowest_gaussian_and_highest_dual_anchor_scores():
    chunk = _video(frames=3, tokens=20, dim=8, seed=5)
    flat = chunk.reshape(-1, 8)
    sub = flat[:, low_variance_channels(flat, 0.5)].view(3, 20, -1)
    temporal = sub.mean(dim=(0, 1))  # first chunk: the memory holds this chunk's mean only
    for strategy, largest in (("gaussian", False), ("dual_anchor", True)):
        scores = stc_scores(sub, temporal, strategy=strategy)
        expected = scores.topk(6, dim=-1, largest=largest).indices.sort(-1).values
        assert torch.equal(op.STCPruner(tokens_per_frame=6, strategy=strategy).select(chunk), expected)
    gaussian = op.STCPruner(tokens_per_frame=6).select(chunk)
    dual = op.STCPruner(tokens_per_frame=6, strategy="dual_anchor").select(chunk)
    assert not torch.equal(gaussian, dual)  # different scores: the selections differ somewhere
    overlap = (gaussian.unsqueeze(-1) == dual.unsqueeze(-2)).any(-1).float().mean()
    assert overlap > 0.3  # ... but both keep outliers: they agree on a good part


def test_stc_temporal_memory_is_the_mean_of_chunk_means_and_reset_clears_it():
    video = _video(frames=6, tokens=16, dim=10, seed=7)
    pruner = op.STCPruner(tokens_per_frame=4)
    means = []
    for f in range(6):
        flat = video[f]
        means.append(flat[:, low_variance_channels(flat, 0.5)].mean(0))
        pruner.select(video[f : f + 1])
        torch.testing.assert_close(pruner.temporal_mean, torch.stack(means).mean(0).double())
    assert pruner.memory_chunks == 6
    with_memory = pruner.select(video[:1])
    pruner.reset()
    assert pruner.memory_chunks == 0 and pruner.temporal_mean is None
    fresh = pruner.select(video[:1])
    assert torch.equal(fresh, op.STCPruner(tokens_per_frame=4).select(video[:1]))
    assert not torch.equal(with_memory, fresh)  # the memory changed the choice for this frame


def test_stc_memory_refuses_another_feature_width():
    pruner = op.STCPruner(tokens_per_frame=2)
    pruner.select(torch.randn(1, 8, 10))
    with pytest.raises(ValueError, match="reset"):
        pruner.select(torch.randn(1, 8, 12))


def test_a_budget_covering_the_frame_keeps_it_whole_without_touching_state():
    chunk = _video(frames=2, tokens=6)
    for pruner in (op.STCPruner(tokens_per_frame=6), op.VidCom2Pruner(tokens_per_frame=64)):
        selection = pruner.compress(chunk)
        assert torch.equal(selection.indices, torch.arange(6).expand(2, 6))
        assert torch.equal(selection.features, chunk)
    assert op.STCPruner(tokens_per_frame=6).memory_chunks == 0


def test_grid_with_row_newlines_keeps_every_newline_and_scores_the_rest():
    rows, cols = 3, 4
    chunk = _video(frames=2, tokens=rows * (cols + 1))
    newlines = torch.arange(cols, rows * (cols + 1), cols + 1)  # last slot of every row
    for pruner in (op.STCPruner(tokens_per_frame=5), op.UniformPruner(tokens_per_frame=5)):
        indices = pruner.select(chunk, grid=(rows, cols))
        assert indices.shape == (2, 5 + rows)
        for row in indices:
            assert bool((row[1:] > row[:-1]).all()) and set(newlines.tolist()) <= set(row.tolist())
    with pytest.raises(ValueError, match="grid"):
        op.UniformPruner(tokens_per_frame=5).select(chunk, grid=(4, 4))


def test_vidcom2_gives_unique_frames_more_tokens():
    gen = torch.Generator().manual_seed(11)
    scene = torch.randn(16, 12, generator=gen) + 2.0
    video = scene + 0.05 * torch.randn(4, 16, 12, generator=gen)  # a still scene ...
    video[2] = -scene  # ... with one frame of something else
    pruner = op.VidCom2Pruner(tokens_per_frame=4)
    budgets = pruner.frame_budgets(video)
    assert int(budgets.argmax()) == 2 and int(budgets[2]) > 4
    assert torch.equal(pruner.compress(video).counts, budgets)


def test_visionzip_keeps_dominant_by_saliency_and_merges_contextual_tokens():
    chunk = _video(frames=1, tokens=12, dim=6)
    saliency = torch.zeros(1, 12)
    saliency[0, [9, 2, 5]] = torch.tensor([3.0, 2.0, 1.0])
    pruner = op.VisionZipPruner(tokens_per_frame=5, contextual=2)
    selection = pruner.compress(chunk, saliency=saliency)
    assert {2, 5, 9} <= set(selection.indices[0].tolist())
    rest = [i for i in range(12) if i not in (2, 5, 9)]  # 9 tokens, targets every 9 // 2 = 4th: rest[0], rest[4]
    targets = [rest[0], rest[4]]
    assert sorted(selection.indices[0].tolist()) == sorted([2, 5, 9, *targets])
    for position, index in enumerate(selection.indices[0].tolist()):
        if index in targets:
            assert not torch.allclose(selection.features[0, position], chunk[0, index])  # merged
        else:
            torch.testing.assert_close(selection.features[0, position], chunk[0, index])
    by_attention = pruner.select(chunk)  # no saliency given: the mean attention received ranks the dominant tokens
    top = mean_attention_received(chunk)[0].topk(3).indices.tolist()
    assert set(top) <= set(by_attention[0].tolist())
    assert not set(top) <= {2, 5, 9}  # the given saliency was really used above
    assert op.VisionZipPruner(tokens_per_frame=64).split(64) == (54, 10)


def test_random_pruner_is_seeded_and_reset_reseeds():
    chunk = _video()
    a, b = op.RandomPruner(tokens_per_frame=5, seed=1), op.RandomPruner(tokens_per_frame=5, seed=1)
    first = a.select(chunk)
    assert torch.equal(first, b.select(chunk))
    assert not torch.equal(first, a.select(chunk))  # the generator moved on
    a.reset()
    assert torch.equal(first, a.select(chunk))
    assert not torch.equal(first, op.RandomPruner(tokens_per_frame=5, seed=2).select(chunk))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: op.STCPruner(tokens_per_frame=0), "tokens_per_frame"),
        (lambda: op.UniformPruner(tokens_per_frame=2.5), "tokens_per_frame"),
        (lambda: op.RandomPruner(tokens_per_frame=True), "tokens_per_frame"),
        (lambda: op.STCPruner(strategy="max"), "strategy"),
        (lambda: op.STCPruner(channel_keep_ratio=1.5), "channel_keep_ratio"),
        (lambda: op.STCPruner(alpha=-0.1), "alpha"),
        (lambda: op.STCPruner(chunk_frames=0), "chunk_frames"),
        (lambda: op.VidCom2Pruner(channel_keep_ratio=0.0), "channel_keep_ratio"),
        (lambda: op.VidCom2Pruner(temperature=0.0), "temperature"),
        (lambda: op.VisionZipPruner(tokens_per_frame=4, contextual=5), "contextual"),
        (lambda: op.VisionZipPruner(tokens_per_frame=4, contextual=-1), "contextual"),
        (lambda: op.UniformPruner().select(torch.randn(16, 8)), "frames, tokens, dim"),
        (lambda: op.VisionZipPruner(4).compress(torch.randn(2, 8, 4), saliency=torch.randn(2, 7)), "saliency"),
        (lambda: op.STCPruner(4).select(torch.randn(2, 9, 4), grid=(2, 2)), "grid"),
        (lambda: stc_prune(torch.randn(2, 8, 4), 2, strategy="mean"), "strategy"),
        (lambda: stc_prune(torch.randn(2, 8, 4), 0), "tokens_per_frame"),
        (lambda: op.STCPruner(4, channel_keep_ratio=0.1).select(torch.randn(1, 8, 4)), "keeps no channel"),
    ],
)
def test_bad_knobs_and_inputs_give_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_stc_prune_is_pure_and_chunk_by_chunk_equals_the_stateful_pruner():
    video = _video(frames=5, tokens=16, dim=10, seed=9)
    pruner = op.STCPruner(tokens_per_frame=4, strategy="dual_anchor", alpha=0.3)
    memory = None
    for f in range(5):
        before = None if memory is None else memory.total.clone()
        indices, new = stc_prune(video[f : f + 1], 4, memory, strategy="dual_anchor", alpha=0.3)
        if memory is not None:
            assert torch.equal(memory.total, before) and memory.count == f  # the memory passed in is untouched
        assert isinstance(new, STCMemory) and new.count == f + 1
        assert torch.equal(indices, pruner.select(video[f : f + 1]))
        torch.testing.assert_close(new.mean, pruner.temporal_mean, rtol=0, atol=0)
        memory = new
    # a session can roll the stream back: the same memory gives the same choice again
    again, _ = stc_prune(video[:1], 4, memory, strategy="dual_anchor", alpha=0.3)
    assert torch.equal(again, stc_prune(video[:1], 4, memory, strategy="dual_anchor", alpha=0.3)[0])
    # a budget covering the frame: everything kept, memory unchanged (not scored)
    whole, same = stc_prune(video[:2], 16, memory)
    assert same is memory and torch.equal(whole, torch.arange(16).expand(2, 16))
    pruner.memory = memory  # restoring a snapshot on the method object
    assert torch.equal(pruner.select(video[:1]), again)


def test_stc_channel_keep_ratio_and_alpha_reach_the_scores():
    chunk = _video(frames=2, tokens=24, dim=12, seed=13)
    flat = chunk.reshape(-1, 12)
    for ratio, alpha in ((0.25, 0.5), (0.75, 0.5), (0.5, 0.1), (0.5, 0.9)):
        sub = flat[:, low_variance_channels(flat, ratio)].view(2, 24, -1)
        for strategy, largest in (("gaussian", False), ("dual_anchor", True)):
            scores = stc_scores(sub, sub.mean(dim=(0, 1)), strategy=strategy, alpha=alpha)
            expected = scores.topk(6, dim=-1, largest=largest).indices.sort(-1).values
            pruner = op.STCPruner(6, strategy=strategy, channel_keep_ratio=ratio, alpha=alpha)
            assert torch.equal(pruner.select(chunk), expected)
    # and each knob changes the choice on a chunk that follows another scene (the temporal anchor then differs)
    other = _video(frames=2, tokens=24, dim=12, seed=14)

    def second_chunk(**knobs) -> torch.Tensor:
        pruner = op.STCPruner(6, strategy="dual_anchor", **knobs)
        pruner.select(other)
        return pruner.select(chunk)

    base = second_chunk()
    assert not torch.equal(base, second_chunk(alpha=0.95))
    assert not torch.equal(base, second_chunk(channel_keep_ratio=1.0))


def test_vidcom2_budgets_follow_temperature_and_channel_keep_ratio():
    chunk = _video(frames=6, tokens=16, dim=12, seed=17)
    flat = chunk.reshape(-1, 12)
    for ratio, temperature in ((0.5, 0.01), (0.25, 0.05), (1.0, 1.0)):
        sub = flat[:, low_variance_channels(flat, ratio)].view(6, 16, -1)
        video_sim, frame_sim = vidcom2_scores(sub)
        budgets = vidcom2_budgets(-video_sim.mean(-1), 4 / 16, 16, temperature)
        pruner = op.VidCom2Pruner(tokens_per_frame=4, channel_keep_ratio=ratio, temperature=temperature)
        assert torch.equal(pruner.frame_budgets(chunk), budgets)
        selection = pruner.compress(chunk)
        for f, budget in enumerate(budgets.tolist()):
            expected = (video_sim + frame_sim)[f].topk(budget, largest=False).indices.sort().values
            assert torch.equal(selection.indices[f, :budget], expected)
    sharp = op.VidCom2Pruner(tokens_per_frame=4).frame_budgets(chunk)
    assert not torch.equal(sharp, op.VidCom2Pruner(tokens_per_frame=4, temperature=10.0).frame_budgets(chunk))
