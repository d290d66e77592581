"""ToMe-style token merging in SigLIP/CLIP towers: the matching and merge against brute force, the block math against a
brute-force ToMe tower (`reference.tome_block`), every knob, and where it refuses to apply."""

from __future__ import annotations

import pytest
import torch

import omnipress as op
from omnipress.adapters import get_adapter
from omnipress.encoders.tome_merge import bipartite_soft_matching, merge_weighted
from omnipress.testing import tiny_model

from .reference import tome_block, tome_matching
from .towers import build_tower, frame_inputs


@pytest.mark.parametrize("protect_first", [False, True])
def test_matching_and_merge_against_brute_force(protect_first):
    torch.manual_seed(0)
    batch, tokens, dim, r = 2, 11, 6, 4
    metric, x = torch.randn(batch, tokens, dim), torch.randn(batch, tokens, 5)
    size = torch.randint(1, 4, (batch, tokens, 1)).float()
    matching = bipartite_soft_matching(metric, r, protect_first=protect_first)
    merged, new_size = merge_weighted(matching, x, size)
    assert merged.shape == (batch, tokens - r, 5)
    for n in range(batch):
        kept, pairs = tome_matching(metric[n], r, protect_first)
        assert matching.kept[n].tolist() == kept
        assert sorted(zip(matching.merged[n].tolist(), matching.into[n].tolist())) == sorted(pairs)
        a, b, sa, sb = x[n, 0::2], x[n, 1::2], size[n, 0::2, 0], size[n, 1::2, 0]
        torch.testing.assert_close(merged[n, : len(kept)], a[kept])
        for j in range(b.shape[0]):
            group = [i for i, t in pairs if t == j]
            total = sb[j] + sum(sa[i] for i in group)
            expected = (b[j] * sb[j] + sum(a[i] * sa[i] for i in group)) / total
            torch.testing.assert_close(merged[n, len(kept) + j], expected)
            assert new_size[n, len(kept) + j, 0] == total
        if protect_first:
            assert kept[0] == 0
        destination = matching.destination(tokens)[n].tolist()
        assert [destination[2 * i] for i in kept] == list(range(len(kept)))
        assert all(destination[2 * i] == len(kept) + j for i, j in pairs)
        assert destination[1::2] == [len(kept) + j for j in range(b.shape[0])]
    assert new_size.sum() == size.sum()


@pytest.mark.parametrize("kind", ["siglip", "clip"])
@pytest.mark.parametrize("knobs", [{"r": 6}, {"merge_ratio": 0.5}])
def test_tome_tower_equals_the_brute_force_reference(kind, knobs):
    tower, _ = build_tower(kind)
    (pixels,), _ = frame_inputs(kind, 2)
    blocks = get_adapter(tower).vision_blocks
    entry: list[torch.Tensor] = []
    handle = blocks[0].register_forward_pre_hook(lambda m, a: entry.append(a[0]))
    with torch.no_grad():
        tower(pixels)
    handle.remove()
    tome = op.ToMe(**knobs)
    with torch.no_grad(), tome(tower):
        out = tower(pixels).last_hidden_state
    clip = kind == "clip"
    tokens = entry[0].shape[1]
    schedule = tome.schedule(tokens, len(blocks), protected=int(clip))
    assert sum(schedule) > 0 and out.shape == (2, tokens - sum(schedule), tower.config.hidden_size)
    with torch.no_grad():
        for f in range(2):
            x, size = entry[0][f], torch.ones(tokens)
            for block, r in zip(blocks, schedule):
                x, size = tome_block(block, x, size, r, protect_first=clip)
            expected = x if clip else tower.post_layernorm(x)  # CLIP's last_hidden_state is before its post-LN
            torch.testing.assert_close(out[f], expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(tome.stats.sizes[f], size)
    stats = tome.stats
    assert stats.tokens_in == tokens and stats.tokens_out == tokens - sum(schedule)
    assert stats.per_layer == [tokens - sum(schedule[:i]) for i in range(len(blocks))]
    assert stats.reduction == pytest.approx(sum(schedule) / tokens)
    # every input patch ends in one output token; a token's size is the number of patches that ended in it
    counts = torch.stack([torch.bincount(s, minlength=stats.tokens_out) for s in stats.source]).float()
    torch.testing.assert_close(counts, stats.sizes)
    torch.testing.assert_close(stats.unmerge(out)[:, :, 0], out[:, :, 0].gather(1, stats.source))
    if clip:  # the class token is never merged and stays first
        assert torch.all(stats.source[:, 0] == 0)
        assert torch.all(stats.sizes[:, 0] == 1)


def test_schedule():
    assert op.ToMe(r=4).schedule(64, 3) == [4, 4, 4]
    assert op.ToMe(r=40).schedule(64, 3) == [32, 16, 8]  # at most half of the tokens per block
    assert op.ToMe(r=40).schedule(65, 2, protected=1) == [32, 16]
    assert op.ToMe(merge_ratio=0.25).schedule(64, 3) == [6, 5, 5]  # 16 tokens spread over the blocks
    assert op.ToMe(merge_ratio=0.0).schedule(64, 3) == [0, 0, 0]


@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_nothing_to_merge_is_the_untouched_tower(kind):
    tower, _ = build_tower(kind)
    (pixels,), _ = frame_inputs(kind, 2)
    with torch.no_grad():
        dense = tower(pixels, output_hidden_states=True)
        with op.ToMe(r=0)(tower):
            same = tower(pixels, output_hidden_states=True)
    assert torch.equal(same.last_hidden_state, dense.last_hidden_state)
    assert all(torch.equal(a, b) for a, b in zip(same.hidden_states, dense.hidden_states, strict=True))
    assert all(type(b).__name__ != "ToMeBlock" for b in get_adapter(tower).vision_blocks)  # restored


def test_where_tome_does_not_apply():
    tower, vlm = build_tower("siglip")
    with pytest.raises(ValueError, match="placeholder tokens"), op.ToMe(r=2)(vlm):
        pass
    qwen, _ = build_tower("qwen2_5_vl")
    with pytest.raises(NotImplementedError, match="patch merger"), op.ToMe(r=2)(qwen):
        pass
    with pytest.raises(ValueError, match="no vision encoder"), op.ToMe(r=2)(tiny_model("llama")):
        pass
    (pixels,), _ = frame_inputs("siglip", 1)
    with pytest.raises(ValueError, match="output_hidden_states"), op.ToMe(r=2)(tower):
        tower(pixels, output_hidden_states=True)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({}, "exactly one of r and merge_ratio"),
        ({"r": 2, "merge_ratio": 0.1}, "exactly one of r and merge_ratio"),
        ({"r": -1}, "r must be an integer >= 0"),
        ({"r": 1.5}, "r must be an integer >= 0"),
        ({"merge_ratio": 1.0}, r"merge_ratio must be in \[0, 1\)"),
    ],
)
def test_bad_knobs(knobs, message):
    with pytest.raises(ValueError, match=message):
        op.ToMe(**knobs)
