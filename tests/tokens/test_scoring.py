"""The pruners' scoring functions against brute-force loops written from the papers' and the spec's formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from omnipress.tokens.scoring import (
    GAUSSIAN_BANDWIDTHS,
    keep_topk,
    low_variance_channels,
    max_min_diversity,
    mean_attention_received,
    stc_scores,
    uniform_indices,
    vidcom2_budgets,
    vidcom2_scores,
    visionzip_contextual,
)


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / max(norm, 1e-12) for x in v]


def _gaussian(x: list[float], a: list[float]) -> float:
    d = sum((xi - ai) ** 2 for xi, ai in zip(x, a))
    return sum(math.exp(-d / (2 * alpha)) for alpha in (1 / 8, 1 / 4, 1 / 2, 1, 2))


def _cos(x: list[float], a: list[float]) -> float:
    dot = sum(xi * ai for xi, ai in zip(x, a))
    return dot / max(math.sqrt(sum(v * v for v in x)) * math.sqrt(sum(v * v for v in a)), 1e-8)


def _brute_stc(chunk: torch.Tensor, temporal: torch.Tensor, strategy: str, alpha: float) -> torch.Tensor:
    frames, tokens, _ = chunk.shape
    tca = _unit(temporal.tolist())
    out = torch.zeros(frames, tokens, dtype=torch.float64)
    for f in range(frames):
        units = [_unit(chunk[f, p].tolist()) for p in range(tokens)]
        sca = [sum(u[c] for u in units) / tokens for c in range(len(units[0]))]
        for p, u in enumerate(units):
            if strategy == "gaussian":
                out[f, p] = _gaussian(u, sca) + _gaussian(u, tca)
            else:
                out[f, p] = alpha * (1 - _cos(u, tca)) + (1 - alpha) * (1 - _cos(u, sca))
    return out


def test_bandwidths_are_two_to_the_minus_three_to_one():
    assert tuple(2.0**k for k in range(-3, 2)) == GAUSSIAN_BANDWIDTHS


@pytest.mark.parametrize("strategy", ["gaussian", "dual_anchor"])
def test_stc_scores_match_the_formula_token_by_token(strategy):
    gen = torch.Generator().manual_seed(0)
    chunk = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64)
    temporal = torch.randn(5, generator=gen, dtype=torch.float64)
    got = stc_scores(chunk, temporal, strategy=strategy, alpha=0.3)
    torch.testing.assert_close(got, _brute_stc(chunk, temporal, strategy, 0.3))


def test_low_variance_channels_keeps_floor_half_of_the_lowest_population_variance():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randn(40, 9, generator=gen) * torch.arange(1, 10)  # channel c has spread ~ c + 1
    tokens[:, 4] *= 0.01
    picked = low_variance_channels(tokens, 0.5)
    assert picked.numel() == 4  # floor(0.5 * 9)
    variance = [((col - col.mean()) ** 2).mean().item() for col in tokens.T]  # population variance, by hand
    ranked = sorted(range(9), key=lambda c: variance[c])
    assert picked.tolist() == ranked[:4]  # lowest first
    with pytest.raises(ValueError, match="keeps no channel"):
        low_variance_channels(tokens, 0.05)


def test_keep_topk_is_ascending_and_picks_the_extremes():
    scores = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0]])
    assert keep_topk(scores, 2, largest=False).tolist() == [[1, 3]]
    assert keep_topk(scores, 3, largest=True).tolist() == [[0, 2, 4]]


def test_vidcom2_scores_and_budgets_match_the_formulas():
    gen = torch.Generator().manual_seed(2)
    chunk = torch.randn(4, 6, 3, generator=gen, dtype=torch.float64)
    video_sim, frame_sim = vidcom2_scores(chunk)
    units = [[_unit(chunk[f, p].tolist()) for p in range(6)] for f in range(4)]
    video = [sum(units[f][p][c] for f in range(4) for p in range(6)) / 24 for c in range(3)]
    for f, p in itertools.product(range(4), range(6)):
        frame = [sum(units[f][q][c] for q in range(6)) / 6 for c in range(3)]
        assert video_sim[f, p].item() == pytest.approx(_gaussian(units[f][p], video))
        assert frame_sim[f, p].item() == pytest.approx(_gaussian(units[f][p], frame))

    uniqueness = torch.tensor([0.0, 0.02, -0.01, 0.005], dtype=torch.float64)
    budgets = vidcom2_budgets(uniqueness, 0.25, 16, temperature=0.01)
    exp = [math.exp((u - 0.02) / 0.01) for u in uniqueness.tolist()]
    probs = [e / sum(exp) for e in exp]
    expected = [max(1, round(min(1.0, 0.25 * (1 + p - sum(probs) / 4)) * 16)) for p in probs]
    assert budgets.tolist() == expected
    assert budgets[1] == budgets.max()  # the most unique frame gets the most tokens


def _brute_max_min(tokens: torch.Tensor, k: int) -> list[int]:
    n = tokens.shape[0]
    unit = [_unit(t.tolist()) for t in tokens]
    dist = [[1 - sum(a * b for a, b in zip(unit[i], unit[j])) for j in range(n)] for i in range(n)]
    first = max(range(n), key=lambda i: min(dist[i][j] for j in range(n) if j != i))
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: min(dist[i][s] for s in chosen)))
    return chosen


def test_max_min_diversity_is_the_greedy_max_min_solution():
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    for k in (1, 4, 12):
        assert max_min_diversity(tokens, k).tolist() == _brute_max_min(tokens, k)
    frames = torch.randn(3, 9, 4, generator=gen, dtype=torch.float64)
    batched = max_min_diversity(frames, 5)  # every frame solved side by side
    assert batched.tolist() == [_brute_max_min(frame, 5) for frame in frames]
    # a duplicated token is never chosen twice while a distinct one is left
    twins = torch.cat([tokens[:3], tokens[:1]])
    assert not {0, 3} <= set(max_min_diversity(twins, 3).tolist())


def test_visionzip_contextual_tokens_are_target_plus_mean_of_the_joined_tokens():
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    targets, merged = visionzip_contextual(tokens, tokens, 3)
    assert targets.tolist() == [0, 3, 6]  # step 10 // 3 = 3
    unit = [_unit(t.tolist()) for t in tokens]
    joined: dict[int, list[int]] = {0: [], 3: [], 6: []}
    for i in range(10):
        if i in joined:
            continue
        best = max(joined, key=lambda t: sum(a * b for a, b in zip(unit[i], unit[t])))
        joined[best].append(i)
    for row, target in enumerate([0, 3, 6]):
        members = joined[target]
        expected = tokens[target] + (tokens[members].mean(0) if members else 0)
        torch.testing.assert_close(merged[row], expected)
    frames = torch.randn(3, 10, 6, generator=gen, dtype=torch.float64)
    batched_targets, batched = visionzip_contextual(frames, frames, 3)  # every frame merged side by side
    assert batched_targets.tolist() == [0, 3, 6] and batched.shape == (3, 3, 6)
    for f in range(3):
        torch.testing.assert_close(batched[f], visionzip_contextual(frames[f], frames[f], 3)[1])


def test_mean_attention_received_averages_each_frames_softmax_attention_over_queries():
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    got = mean_attention_received(tokens)
    for f in range(2):
        rows = []
        for i in range(5):
            logits = [
                sum(a * b for a, b in zip(tokens[f, i].tolist(), tokens[f, j].tolist())) / math.sqrt(3)
                for j in range(5)
            ]
            top = max(logits)
            weights = [math.exp(v - top) for v in logits]
            rows.append([w / sum(weights) for w in weights])
        for j in range(5):
            assert got[f, j].item() == pytest.approx(sum(row[j] for row in rows) / 5, rel=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(2))


def test_uniform_indices_are_evenly_spaced_and_unique():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert uniform_indices(7, 7).tolist() == list(range(7))
    for tokens, k in [(196, 64), (24, 5), (17, 16)]:
        index = uniform_indices(tokens, k)
        assert index.numel() == k and bool((index[1:] > index[:-1]).all()) and int(index.max()) < tokens
