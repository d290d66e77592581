"""Scoring functions against brute-force references written with plain Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from omnipress.kv.scoring import (
    h2o_scores,
    key_diversity,
    knorm_scores,
    minmax,
    mixkv_scores,
    pool1d,
    random_scores,
    reduce_gqa,
    redundancy_weight,
    snapkv_scores,
    streaming_llm_scores,
    unit_mean_key,
    value_norms,
    window_attention,
)

# ---------------------------------------------------------------------------------------------------------------
# brute-force references (plain Python floats, explicit loops)


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v))


def norm(u: list[float]) -> float:
    return math.sqrt(dot(u, u))


def ref_causal_attention(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> list:
    """Nested lists [b][hq][i][n]: query i sits at position N - Q + i and sees keys <= its position."""
    q, k = queries.double().tolist(), keys.double().tolist()
    batch, q_heads, q_len = len(q), len(q[0]), len(q[0][0])
    kv_heads, n = len(k[0]), len(k[0][0])
    group = q_heads // kv_heads
    out = []
    for b in range(batch):
        per_head = []
        for hq in range(q_heads):
            rows = []
            for i in range(q_len):
                position = n - q_len + i
                logits = [scaling * dot(q[b][hq][i], k[b][hq // group][t]) for t in range(position + 1)]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights)
                rows.append([w / total for w in weights] + [0.0] * (n - position - 1))
            per_head.append(rows)
        out.append(per_head)
    return out


def ref_pool(row: list[float], kernel: int, how: str) -> list[float]:
    pad = kernel // 2
    out = []
    for i in range(len(row)):
        inside = [row[t] for t in range(i - pad, i + pad + 1) if 0 <= t < len(row)]
        out.append(sum(inside) / kernel if how == "avg" else max(inside))
    return out


def ref_unit_mean(head_keys: list[list[float]]) -> list[float]:
    units = [[x / norm(key) for x in key] for key in head_keys]
    return [sum(u[d] for u in units) / len(units) for d in range(len(head_keys[0]))]


def ref_mixkv_row(attention, keys, values, weight, candidates, use_value_norm, eps=1e-8) -> list[float]:
    """One (batch, head) row of the MixKV score, spec §2.2 steps 2-5, written out by hand."""
    length = len(attention)
    cand = [i for i in range(length) if candidates[i]]
    mean_key = ref_unit_mean(keys)
    raw = [-dot([x / norm(keys[i]) for x in keys[i]], mean_key) for i in range(length)]
    mean_a = sum(attention[i] for i in cand) / len(cand)
    low, high = min(raw[i] for i in cand), max(raw[i] for i in cand)
    div = [(raw[i] - low) / (high - low + eps) for i in range(length)]
    mean_div = sum(div[i] for i in cand) / len(cand)
    div = [d * mean_a / (mean_div + eps) for d in div]
    importance = list(attention)
    if use_value_norm:
        norms = [norm(values[i]) for i in range(length)]
        low, high = min(norms[i] for i in cand), max(norms[i] for i in cand)
        scaled = [(x - low) / (high - low) if high > low else 0.0 for x in norms]
        mean_n = sum(scaled[i] for i in cand) / len(cand)
        importance = [attention[i] + scaled[i] * mean_a / (mean_n + eps) for i in range(length)]
    return [weight * div[i] + (1 - weight) * importance[i] if candidates[i] else float("-inf") for i in range(length)]


def stable_order(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, dim=-1, descending=True, stable=True).indices


# ---------------------------------------------------------------------------------------------------------------
# window attention, GQA, pooling, SnapKV, H2O


@pytest.mark.parametrize(("q_heads", "kv_heads"), [(4, 2), (3, 3), (6, 1)])
def test_window_attention_matches_brute_force(q_heads: int, kv_heads: int) -> None:
    queries, keys = randn(2, q_heads, 3, 5, seed=1), randn(2, kv_heads, 7, 5, seed=2)
    got = window_attention(queries, keys, scaling=0.37)
    assert got.shape == (2, q_heads, 3, 7)
    assert got.dtype == torch.float32
    expected = torch.tensor(ref_causal_attention(queries, keys, 0.37), dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)


def test_window_attention_causal_rule_and_rows_sum_to_one() -> None:
    queries, keys = randn(1, 2, 4, 8, seed=3), randn(1, 2, 10, 8, seed=4)
    probs = window_attention(queries, keys, scaling=8**-0.5)
    for j in range(4):
        assert torch.all(probs[:, :, j, 6 + j + 1 :] == 0)  # window query j sits at N - W + j = 6 + j
        assert torch.all(probs[:, :, j, : 6 + j + 1] > 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2, 4))


def test_window_attention_gqa_equals_repeated_keys() -> None:
    queries, keys = randn(2, 6, 3, 4, seed=5), randn(2, 2, 9, 4, seed=6)
    grouped = window_attention(queries, keys, scaling=0.5)
    repeated = window_attention(queries, keys.repeat_interleave(3, dim=1), scaling=0.5)
    torch.testing.assert_close(grouped, repeated)


def test_window_attention_low_precision_inputs() -> None:
    queries, keys = randn(1, 2, 3, 8, seed=7).bfloat16(), randn(1, 1, 6, 8, seed=8).bfloat16()
    got = window_attention(queries, keys, scaling=0.3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, window_attention(queries.float(), keys.float(), scaling=0.3))


def test_reduce_gqa_matches_loops() -> None:
    scores = randn(2, 6, 5, seed=9)
    for how, reduce in (("mean", lambda xs: sum(xs) / len(xs)), ("max", max)):
        got = reduce_gqa(scores, 2, how=how)
        assert got.shape == (2, 2, 5)
        for b in range(2):
            for h in range(2):
                for t in range(5):
                    members = [scores[b, 3 * h + i, t].item() for i in range(3)]  # repeat_kv layout
                    assert got[b, h, t].item() == pytest.approx(reduce(members), abs=1e-6)


def test_reduce_gqa_keeps_trailing_dims() -> None:
    scores = randn(1, 4, 2, 3, seed=10)
    assert reduce_gqa(scores, 4).shape == (1, 4, 2, 3)
    torch.testing.assert_close(reduce_gqa(scores, 4), scores)
    torch.testing.assert_close(reduce_gqa(scores, 1, how="max"), scores.amax(dim=1, keepdim=True))


@pytest.mark.parametrize("how", ["avg", "max"])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_pool1d_matches_explicit_windows(how: str, kernel: int) -> None:
    scores = randn(2, 3, 6, seed=11)
    got = pool1d(scores, kernel, how=how)
    assert got.shape == scores.shape
    for b in range(2):
        for h in range(3):
            expected = ref_pool(scores[b, h].tolist(), kernel, how)
            assert got[b, h].tolist() == pytest.approx(expected, abs=1e-6)


def test_pool1d_avg_damps_edges_and_kernel_one_is_identity() -> None:
    ones = torch.ones(1, 1, 6)
    assert pool1d(ones, 5).flatten().tolist() == pytest.approx([3 / 5, 4 / 5, 1, 1, 4 / 5, 3 / 5])
    scores = randn(1, 2, 4, seed=12)
    assert torch.equal(pool1d(scores, 1), scores)
    assert pool1d(torch.zeros(1, 2, 0), 5).shape == (1, 2, 0)


@pytest.mark.parametrize("kernel", [0, 2, 4, -1, 3.0])
def test_pool1d_rejects_bad_kernels(kernel) -> None:
    with pytest.raises(ValueError, match="odd"):
        pool1d(torch.ones(1, 1, 5), kernel)


def test_snapkv_scores_matches_brute_force() -> None:
    queries, keys = randn(2, 4, 3, 5, seed=13), randn(2, 2, 9, 5, seed=14)
    probs = ref_causal_attention(queries, keys, 0.4)
    got = snapkv_scores(queries, keys, scaling=0.4, kernel=3, pooling="avg", gqa="mean")
    length = 9 - 3
    assert got.shape == (2, 2, length)
    for b in range(2):
        for h in range(2):
            per_query_head = []
            for hq in (2 * h, 2 * h + 1):
                per_query_head.append([sum(probs[b][hq][j][t] for j in range(3)) / 3 for t in range(length)])
            grouped = [(x + y) / 2 for x, y in zip(*per_query_head)]
            assert got[b, h].tolist() == pytest.approx(ref_pool(grouped, 3, "avg"), abs=1e-6)


def test_snapkv_scores_max_variants_and_empty_prefix() -> None:
    queries, keys = randn(1, 4, 2, 4, seed=15), randn(1, 2, 8, 4, seed=16)
    window = window_attention(queries, keys, scaling=0.5)[..., :6].mean(dim=2)  # (1, 4, 6)
    got = snapkv_scores(queries, keys, scaling=0.5, kernel=1, gqa="max")
    torch.testing.assert_close(got, window.view(1, 2, 2, 6).amax(dim=2))
    got = snapkv_scores(queries, keys, scaling=0.5, kernel=3, pooling="max")
    torch.testing.assert_close(got, torch.nn.functional.max_pool1d(window.view(1, 2, 2, 6).mean(2), 3, 1, 1))
    assert snapkv_scores(randn(1, 2, 5, 4, seed=17), keys[:, :, :5], scaling=0.5).shape == (1, 2, 0)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_h2o_scores_matches_brute_force(chunk: int) -> None:
    queries, keys = randn(2, 4, 7, 4, seed=18), randn(2, 2, 7, 4, seed=19)
    probs = ref_causal_attention(queries, keys, 0.6)
    got = h2o_scores(queries, keys, scaling=0.6, chunk=chunk)
    assert got.shape == (2, 2, 7)
    for b in range(2):
        for h in range(2):
            expected = [sum(probs[b][hq][i][t] for hq in (2 * h, 2 * h + 1) for i in range(7)) / 2 for t in range(7)]
            assert got[b, h].tolist() == pytest.approx(expected, abs=1e-5)
    # every query distributes a total mass of 1, so each KV head receives Q in total (mean over its group)
    torch.testing.assert_close(got.sum(-1), torch.full((2, 2), 7.0))


def test_h2o_scores_with_trailing_queries_equals_window_sum() -> None:
    queries, keys = randn(1, 2, 3, 4, seed=20), randn(1, 1, 8, 4, seed=21)
    got = h2o_scores(queries, keys, scaling=0.5, chunk=2, gqa="max")
    expected = window_attention(queries, keys, scaling=0.5).sum(dim=2).amax(dim=1, keepdim=True)
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------------------------------------------
# query-free scores


def test_knorm_and_value_norms_match_loops() -> None:
    keys = randn(2, 3, 4, 5, seed=22)
    knorm, vnorm = knorm_scores(keys), value_norms(keys)
    assert knorm.shape == vnorm.shape == (2, 3, 4)
    for b in range(2):
        for h in range(3):
            for t in range(4):
                length = norm(keys[b, h, t].tolist())
                assert knorm[b, h, t].item() == pytest.approx(-length, rel=1e-6)
                assert vnorm[b, h, t].item() == pytest.approx(length, rel=1e-6)


def test_streaming_llm_scores_order() -> None:
    scores = streaming_llm_scores(8, 2)
    assert scores.shape == (8,)
    order = stable_order(scores).tolist()
    assert sorted(order[:2]) == [0, 1]
    assert order[2:] == [7, 6, 5, 4, 3, 2]
    assert stable_order(streaming_llm_scores(5, 0)).tolist() == [4, 3, 2, 1, 0]
    assert sorted(stable_order(streaming_llm_scores(3, 9)).tolist()) == [0, 1, 2]
    assert streaming_llm_scores(0, 4).shape == (0,)
    with pytest.raises(ValueError, match="sinks"):
        streaming_llm_scores(4, -1)


def test_random_scores_are_reproducible() -> None:
    first = random_scores((2, 3, 5), generator=torch.Generator().manual_seed(0))
    second = random_scores((2, 3, 5), generator=torch.Generator().manual_seed(0))
    assert first.shape == (2, 3, 5)
    assert torch.equal(first, second)
    assert bool(((first >= 0) & (first < 1)).all())
    with pytest.raises(ValueError, match="shape"):
        random_scores((2, -1))


def test_unit_mean_key_and_key_diversity_match_loops() -> None:
    keys = randn(2, 2, 6, 4, seed=23)
    mean_key = unit_mean_key(keys)
    diversity = key_diversity(keys, 4)
    assert mean_key.shape == (2, 2, 4)
    assert diversity.shape == (2, 2, 4)
    for b in range(2):
        for h in range(2):
            rows = keys[b, h].tolist()
            expected_mean = ref_unit_mean(rows)  # over all 6 tokens, window included
            assert mean_key[b, h].tolist() == pytest.approx(expected_mean, abs=1e-6)
            for t in range(4):
                unit = [x / norm(rows[t]) for x in rows[t]]
                assert diversity[b, h, t].item() == pytest.approx(-dot(unit, expected_mean), abs=1e-6)
    assert key_diversity(keys, 0).shape == (2, 2, 0)
    with pytest.raises(ValueError, match="n_valid"):
        key_diversity(keys, 7)


def test_key_diversity_uses_window_keys_in_the_mean() -> None:
    keys = randn(1, 1, 6, 4, seed=24)
    changed = keys.clone()
    changed[:, :, 5] = 10 * randn(4, seed=25)  # only a window token changes
    assert not torch.allclose(key_diversity(keys, 3), key_diversity(changed, 3))


def test_redundancy_weight_matches_pairwise_double_loop() -> None:
    keys = randn(2, 3, 7, 4, seed=26) + 0.8  # positively correlated keys
    got = redundancy_weight(keys, clamp=False)
    assert got.shape == (2, 3)
    for b in range(2):
        for h in range(3):
            rows = keys[b, h].tolist()
            pairs = [
                dot(rows[i], rows[j]) / (norm(rows[i]) * norm(rows[j])) for i in range(7) for j in range(7) if i != j
            ]
            assert got[b, h].item() == pytest.approx(sum(pairs) / len(pairs), abs=1e-5)
    torch.testing.assert_close(redundancy_weight(keys), got.clamp(0, 1))


def test_redundancy_weight_edge_cases() -> None:
    one_token = randn(2, 2, 1, 4, seed=27)
    assert torch.equal(redundancy_weight(one_token), torch.ones(2, 2))
    key = randn(4, seed=28)
    same = torch.stack([key, 2 * key, 0.5 * key]).view(1, 1, 3, 4)
    assert redundancy_weight(same).item() == pytest.approx(1.0, abs=1e-6)
    opposite = torch.stack([key, -key]).view(1, 1, 2, 4)
    assert redundancy_weight(opposite, clamp=False).item() == pytest.approx(-1.0, abs=1e-6)
    assert redundancy_weight(opposite).item() == 0.0


# ---------------------------------------------------------------------------------------------------------------
# min-max and MixKV


def test_minmax_matches_loops_and_handles_constant_rows() -> None:
    x = randn(3, 5, seed=29)
    got = minmax(x, dim=-1, eps=0.1)
    for r in range(3):
        row = x[r].tolist()
        expected = [(v - min(row)) / (max(row) - min(row) + 0.1) for v in row]
        assert got[r].tolist() == pytest.approx(expected, abs=1e-6)
    along_rows = minmax(x, dim=0)
    for c in range(5):
        col = x[:, c].tolist()
        assert along_rows[:, c].tolist() == pytest.approx([(v - min(col)) / (max(col) - min(col)) for v in col])
    assert torch.equal(minmax(torch.full((2, 4), 3.0)), torch.zeros(2, 4))


def test_minmax_with_mask() -> None:
    x = torch.tensor([[5.0, 1.0, float("-inf"), 3.0, 100.0]])
    mask = torch.tensor([True, True, False, True, False])
    got = minmax(x, mask=mask)
    assert got.tolist() == [[1.0, 0.0, 0.0, 0.5, 0.0]]
    assert torch.equal(minmax(x, mask=torch.zeros(5, dtype=torch.bool)), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="broadcast"):
        minmax(x, mask=torch.ones(3, dtype=torch.bool))


def make_mixkv_inputs(seed: int, batch: int = 2, heads: int = 2, n: int = 12, window: int = 4):
    keys = randn(batch, heads, n, 6, seed=seed) + 0.3
    values = randn(batch, heads, n, 6, seed=seed + 1)
    queries = randn(batch, 2 * heads, window, 6, seed=seed + 2)
    attention = snapkv_scores(queries, keys, scaling=6**-0.5)
    return attention, keys, values


@pytest.mark.parametrize("use_value_norm", [True, False])
def test_mixkv_scores_matches_brute_force(use_value_norm: bool) -> None:
    attention, keys, values = make_mixkv_inputs(seed=30)
    weight = redundancy_weight(keys)
    got = mixkv_scores(attention, keys, values, weight, use_value_norm=use_value_norm)
    assert got.shape == attention.shape == (2, 2, 8)
    for b in range(2):
        for h in range(2):
            expected = ref_mixkv_row(
                attention[b, h].tolist(),
                keys[b, h].tolist(),
                values[b, h].tolist(),
                weight[b, h].item(),
                [True] * 8,
                use_value_norm,
            )
            assert got[b, h].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_mixkv_scores_with_candidates_matches_brute_force() -> None:
    attention, keys, values = make_mixkv_inputs(seed=31)
    candidates = torch.tensor([False, True, True, False, True, True, True, False])
    weight = torch.tensor([0.3, 0.7])
    got = mixkv_scores(attention, keys, values, weight, candidates=candidates)
    assert bool(torch.isneginf(got[..., ~candidates]).all())
    assert bool(torch.isfinite(got[..., candidates]).all())
    for b in range(2):
        for h in range(2):
            expected = ref_mixkv_row(
                attention[b, h].tolist(),
                keys[b, h].tolist(),
                values[b, h].tolist(),
                weight[h].item(),
                candidates.tolist(),
                True,
            )
            assert got[b, h].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    # non-candidate attention and values do not matter (keys do: the mean key uses all N tokens)
    noisy_attention, noisy_values = attention.clone(), values.clone()
    noisy_attention[..., ~candidates] = 123.0
    noisy_values[:, :, :8][:, :, ~candidates] *= 50
    torch.testing.assert_close(mixkv_scores(noisy_attention, keys, noisy_values, weight, candidates=candidates), got)


def test_mixkv_weight_zero_ranks_like_the_host() -> None:
    attention, keys, values = make_mixkv_inputs(seed=32)
    got = mixkv_scores(attention, keys, values, 0.0, use_value_norm=False)
    assert torch.equal(got, attention)
    assert torch.equal(stable_order(got), stable_order(attention))


def test_mixkv_weight_one_ranks_like_key_diversity() -> None:
    attention, keys, values = make_mixkv_inputs(seed=33)
    for use_value_norm in (True, False):
        got = mixkv_scores(attention, keys, values, torch.ones(2, 2), use_value_norm=use_value_norm)
        assert torch.equal(stable_order(got), stable_order(key_diversity(keys, 8)))
    candidates = torch.tensor([True, False] * 4)
    got = mixkv_scores(attention, keys, values, 1.0, candidates=candidates)
    expected = key_diversity(keys, 8).masked_fill(~candidates, float("-inf"))
    assert torch.equal(stable_order(got), stable_order(expected))


def test_mixkv_score_scale_quirk_doubles_importance() -> None:
    attention, keys, values = make_mixkv_inputs(seed=34)
    importance = mixkv_scores(attention, keys, values, 0.0)  # w = 0 -> score = importance = a + aligned vnorm
    torch.testing.assert_close(importance.mean(-1), 2 * attention.mean(-1), rtol=1e-5, atol=0)
    diversity = mixkv_scores(attention, keys, values, 1.0)  # w = 1 -> score = aligned diversity
    torch.testing.assert_close(diversity.mean(-1), attention.mean(-1), rtol=1e-5, atol=0)
    half = mixkv_scores(attention, keys, values, 0.5)
    torch.testing.assert_close(half, 0.5 * diversity + 0.5 * importance)


def test_mixkv_weight_shapes_are_equivalent() -> None:
    attention, keys, values = make_mixkv_inputs(seed=35)
    reference = mixkv_scores(attention, keys, values, 0.4)
    for weight in (torch.tensor(0.4), torch.full((2,), 0.4), torch.full((2, 2), 0.4), torch.full((1, 2), 0.4)):
        torch.testing.assert_close(mixkv_scores(attention, keys, values, weight), reference)


def test_mixkv_constant_values_give_zero_value_norm_term() -> None:
    attention, keys, _ = make_mixkv_inputs(seed=36)
    values = torch.ones_like(keys)
    got = mixkv_scores(attention, keys, values, 0.0)
    assert torch.equal(got, attention)


def test_functions_do_not_modify_inputs() -> None:
    queries, keys, values = randn(2, 4, 3, 6, seed=37), randn(2, 2, 9, 6, seed=38), randn(2, 2, 9, 6, seed=39)
    saved = [t.clone() for t in (queries, keys, values)]
    attention = snapkv_scores(queries, keys, scaling=0.4)
    attention_saved = attention.clone()
    window_attention(queries, keys, scaling=0.4)
    h2o_scores(randn(2, 4, 9, 6, seed=40), keys, scaling=0.4, chunk=4)
    pool1d(attention, 3)
    minmax(attention, mask=torch.ones(6, dtype=torch.bool))
    redundancy_weight(keys)
    mixkv_scores(attention, keys, values, redundancy_weight(keys), candidates=torch.ones(6, dtype=torch.bool))
    for before, after in zip(saved, (queries, keys, values)):
        assert torch.equal(before, after)
    assert torch.equal(attention, attention_saved)


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_attention_inputs_raise() -> None:
    queries, keys = randn(1, 4, 3, 8, seed=41), randn(1, 2, 6, 8, seed=42)
    with pytest.raises(ValueError, match="more queries"):
        window_attention(queries, keys[:, :, :2], scaling=0.3)  # W > N
    with pytest.raises(ValueError, match="multiple"):
        window_attention(randn(1, 3, 3, 8, seed=43), keys, scaling=0.3)
    with pytest.raises(ValueError, match="head dim"):
        window_attention(queries, randn(1, 2, 6, 4, seed=44), scaling=0.3)
    with pytest.raises(ValueError, match="batch"):
        snapkv_scores(queries, randn(2, 2, 6, 8, seed=45), scaling=0.3)
    with pytest.raises(ValueError, match="dimensions"):
        window_attention(queries[0], keys, scaling=0.3)
    with pytest.raises(ValueError, match="scaling"):
        window_attention(queries, keys, scaling=0.0)
    with pytest.raises(ValueError, match="how"):
        reduce_gqa(torch.ones(1, 4, 2), 2, how="sum")
    with pytest.raises(ValueError, match="how"):
        snapkv_scores(queries, keys, scaling=0.3, pooling="median")
    with pytest.raises(ValueError, match="chunk"):
        h2o_scores(queries, keys, scaling=0.3, chunk=0)
    with pytest.raises(TypeError, match="floating"):
        knorm_scores(torch.ones(1, 1, 2, 2, dtype=torch.long))


def test_bad_mixkv_inputs_raise() -> None:
    attention, keys, values = make_mixkv_inputs(seed=46)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mixkv_scores(attention, keys, values, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mixkv_scores(attention, keys, values, torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mixkv_scores(attention, keys, values, torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="weight tensor"):
        mixkv_scores(attention, keys, values, torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        mixkv_scores(attention, keys, values[:, :, :-1], 0.5)
    with pytest.raises(ValueError, match="KV heads"):
        mixkv_scores(attention[:, :1], keys, values, 0.5)
    with pytest.raises(ValueError, match="holds only"):
        mixkv_scores(torch.rand(2, 2, 13), keys, values, 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        mixkv_scores(-attention, keys, values, 0.5)
    with pytest.raises(TypeError, match="bool"):
        mixkv_scores(attention, keys, values, 0.5, candidates=torch.ones(8))
    with pytest.raises(ValueError, match="candidates"):
        mixkv_scores(attention, keys, values, 0.5, candidates=torch.ones(5, dtype=torch.bool))
