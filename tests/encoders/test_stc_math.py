"""STC-Cacher's pure functions against brute force: key similarity, dynamic-token selection, segment attention."""

from __future__ import annotations

import itertools

import pytest
import torch

from omnipress.encoders.segment_attention import segment_attention
from omnipress.encoders.stc_select import key_similarity, num_dynamic, select_dynamic

from .reference import softmax_attention


def test_num_dynamic_is_the_official_rule():
    assert num_dynamic(729, 0.25) == 182  # SigLIP-384 (spec §1.2.1)
    assert num_dynamic(576, 0.25) == 144
    assert num_dynamic(10, 0.01) == 1  # at least one
    assert num_dynamic(10, 1.0) == 10


def test_key_similarity_against_brute_force():
    torch.manual_seed(0)
    keys, ref = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    cos = key_similarity(keys, ref, "cosine")
    l2 = key_similarity(keys, ref, "l2")
    for f in range(3):
        for t in range(7):
            a, b = keys[f, t], ref[f, t]
            assert cos[f, t] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)
            assert l2[f, t] == pytest.approx(-float((a - b).norm()), abs=1e-5)
    with pytest.raises(ValueError, match="metric"):
        key_similarity(keys, ref, "dot")


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 1.0])
def test_ratio_selection_is_the_least_similar_tokens_in_order(ratio):
    torch.manual_seed(1)
    sim = torch.rand(4, 50)
    chosen = select_dynamic(sim, ratio)
    m = num_dynamic(50, ratio)
    for f, idx in enumerate(chosen):
        brute = sorted(sorted(range(50), key=lambda t: float(sim[f, t]))[:m])
        assert idx.tolist() == brute


def test_threshold_selection_is_capped_and_ordered():
    sim = torch.tensor([[0.9, 0.1, 0.95, 0.5, 0.2, 0.8], [0.99, 0.99, 0.99, 0.99, 0.99, 0.99]])
    chosen = select_dynamic(sim, update_ratio=0.5, mode="threshold", threshold=0.85)
    # frame 0: below 0.85 are tokens 1 (0.1), 4 (0.2), 3 (0.5), 5 (0.8); the cap floor(6 * 0.5) = 3 keeps 1, 4, 3
    assert chosen[0].tolist() == [1, 3, 4]
    assert chosen[1].tolist() == []
    assert select_dynamic(sim, 1.0, "threshold", 0.85)[0].tolist() == [1, 3, 4, 5]
    with pytest.raises(ValueError, match="mode"):
        select_dynamic(sim, 0.5, mode="gate")


@pytest.mark.parametrize("bounds", [[0, 24], [0, 10, 16, 24], [0, 1, 24], [0, 8, 16, 24]])
def test_segment_attention_against_brute_force(bounds):
    torch.manual_seed(2)
    frames, tokens, heads, dim = 2, 24, 3, 8
    q, k, v = (torch.randn(frames, tokens, heads, dim) for _ in range(3))
    rows = torch.stack([torch.tensor([0, 3, 9, 10, 15, 23]), torch.tensor([1, 2, 11, 12, 13, 14])])
    segment = torch.zeros(tokens, dtype=torch.long)
    for s, (a, b) in enumerate(itertools.pairwise(bounds)):
        segment[a:b] = s
    scale = dim**-0.5
    for selected in (rows, None):
        query = q if selected is None else q.gather(1, selected[..., None, None].expand(-1, -1, heads, dim))
        out = segment_attention(query, k, v, selected, bounds, scale)
        for f in range(frames):
            full = softmax_attention(q[f], k[f], v[f], segment).unflatten(-1, (heads, dim))
            expected = full if selected is None else full[selected[f]]
            torch.testing.assert_close(out[f], expected, rtol=1e-5, atol=1e-5)
