"""The in-LLM pruning math against brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch

from omnipress.tokens.inllm.scoring import (
    check_retain,
    dart_scores,
    frame_keep,
    probe_attention,
    retained_counts,
    tail_query_rows,
    top_fraction,
    top_fraction_by_segment,
)


def _candidates():
    c = torch.zeros(3, 12, dtype=torch.bool)
    c[0, 2:9] = True  # 7
    c[1, 0:10] = True  # 10
    c[2, [1, 3, 4, 8, 11]] = True  # 5, scattered
    return c


def test_retained_counts_round_up_without_float_noise():
    c = _candidates()
    assert retained_counts(c, 0.7).tolist() == [5, 7, 4]  # ceil(4.9), 7 (not 8), ceil(3.5)
    assert retained_counts(c, 1.0).tolist() == [7, 10, 5]


def test_top_fraction_matches_a_sorted_loop():
    g = torch.Generator().manual_seed(0)
    c = _candidates()
    scores = torch.randint(0, 4, c.shape, generator=g).float()  # many ties
    got = top_fraction(scores, c, 0.5)
    for row in range(3):
        cols = c[row].nonzero().squeeze(-1).tolist()
        k = math.ceil(round(len(cols) * 0.5, 6))
        ranked = sorted(cols, key=lambda j: (-scores[row, j].item(), j))[:k]  # ties: earlier column
        assert got[row].nonzero().squeeze(-1).tolist() == sorted(ranked)


def test_frame_keep_is_the_floor_grid():
    c = _candidates()
    for retain in (0.3, 0.5, 0.9, 1.0):
        got = frame_keep(c, retain)
        for row in range(3):
            cols = c[row].nonzero().squeeze(-1).tolist()
            n = len(cols)
            k = math.ceil(round(n * retain, 6))
            assert got[row].nonzero().squeeze(-1).tolist() == [cols[i * n // k] for i in range(k)]


def test_probe_attention_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    bsz, heads, kv_heads, seq, q, d = 2, 4, 2, 9, 3, 8
    query = torch.randn(bsz, heads, q, d, generator=g)
    key = torch.randn(bsz, kv_heads, seq, d, generator=g)
    valid = torch.ones(bsz, seq, dtype=torch.bool)
    valid[1, :2] = False  # left padding
    rows = torch.tensor([[True, False, True], [False, True, True]])
    got = probe_attention(query, key, scaling=0.3, query_rows=rows, key_valid=valid)
    for b in range(bsz):
        for h in range(heads):
            acc = torch.zeros(seq)
            for i in range(q):
                if not rows[b, i]:
                    continue
                col = seq - q + i
                logits = torch.tensor(
                    [
                        (query[b, h, i] @ key[b, h // 2, j]).item() * 0.3
                        if (valid[b, j] and j <= col)
                        else -float("inf")
                        for j in range(seq)
                    ]
                )
                acc += logits.softmax(-1)
            torch.testing.assert_close(got[b, h], acc / rows[b].sum())
    cross = probe_attention(query, key, scaling=0.3, query_rows=rows, key_valid=valid, causal=False)
    assert cross[0, 0, -1] > 0 and got[0, 0, -1] > 0 and not torch.allclose(cross, got)


def test_tail_query_rows():
    c = torch.zeros(2, 8, dtype=torch.bool)
    c[0, 1:4] = True
    c[1, 2:8] = True  # audio up to the end: falls back to the last token
    valid = torch.ones(2, 8, dtype=torch.bool)
    assert tail_query_rows(c, valid, 8, "text").tolist() == [
        [False] * 4 + [True] * 4,
        [False] * 7 + [True],
    ]
    assert tail_query_rows(c, valid, 3, "last").tolist() == [[False, False, True]] * 2
    with pytest.raises(ValueError, match="query"):
        tail_query_rows(c, valid, 3, "all")


def test_dart_scores_match_a_loop():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 10, 6, generator=g)
    c = torch.zeros(2, 10, dtype=torch.bool)
    c[0, 1:8] = True
    c[1, [0, 5]] = True  # fewer candidates than pivots
    got = dart_scores(x, c, pivots=3)
    for b in range(2):
        cols = c[b].nonzero().squeeze(-1).tolist()
        pivots = sorted(cols, key=lambda j: -x[b, j].norm().item())[:3]
        for j in range(10):
            if j not in cols:
                assert got[b, j] == -float("inf")
            elif j in pivots:
                assert got[b, j] == float("inf")
            else:
                sims = [torch.nn.functional.cosine_similarity(x[b, j], x[b, p], dim=0).item() for p in pivots]
                assert got[b, j].item() == pytest.approx(-max(sims), abs=1e-5)


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, float("nan"), "0.5", True])
def test_check_retain_refuses(bad):
    with pytest.raises(ValueError, match="retain"):
        check_retain(bad)


@pytest.mark.parametrize("seed", range(4))
def test_top_fraction_by_segment_matches_a_loop(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        n = int(torch.randint(1, 40, (), generator=g))
        candidates = torch.rand(3, n, generator=g) < 0.7
        scores = torch.randn(3, n, generator=g).round(decimals=1)  # ties: the earlier column wins
        segments = int(torch.randint(1, 9, (), generator=g))
        retain = float(torch.rand((), generator=g)) * 0.99 + 0.01
        got = top_fraction_by_segment(scores, candidates, retain, segments)
        for b in range(3):
            cols = candidates[b].nonzero().flatten().tolist()
            k = math.ceil(round(len(cols) * retain, 6))
            want = set()
            for s in range(segments):
                ranks = [r for r in range(len(cols)) if r * segments // len(cols) == s]
                if ranks:
                    quota = k * (ranks[-1] + 1) // len(cols) - k * ranks[0] // len(cols)
                    members = sorted((cols[r] for r in ranks), key=lambda j: (-float(scores[b, j]), j))
                    want |= set(members[:quota])
            assert set(got[b].nonzero().flatten().tolist()) == want
            assert int(got[b].sum()) == k
        if segments == 1:
            assert torch.equal(got, top_fraction(scores, candidates, retain))
    with pytest.raises(ValueError, match="segments"):
        top_fraction_by_segment(scores, candidates, 0.5, 0)
