"""Budget rules and top-k selection against hand-computed answers and independent loop implementations.

Capacities are checked in both rounding modes: `exact_total=True` (default: largest-remainder rounding, the nominal
total kept exactly) and `exact_total=False` (the official PyramidKV/AdaKV/SparseMM/MixKV rounding).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch

from omnipress.kv.budgets import (
    RaggedIndices,
    adakv_capacities,
    apportion,
    pyramid_capacities,
    sparsemm_capacities,
    top_capacity_indices,
    top_uniform_indices,
)

# ---------------------------------------------------------------------------------------------------------------
# independent straightforward implementations


def ref_round_exact(ideal: list[Fraction], total: int, caps: list[int] | None = None) -> list[int]:
    """Largest remainder, written from the definition: caps first (excess shared in proportion), then floors, then
    one unit each to the largest fractional parts, ties to the lower index."""
    x = list(ideal)
    if caps is not None:
        total = min(total, sum(caps))
        capped: set[int] = set()
        while any(x[i] > caps[i] for i in range(len(x)) if i not in capped):
            capped |= {i for i in range(len(x)) if x[i] > caps[i]}
            free = [i for i in range(len(x)) if i not in capped]
            budget = total - sum(caps[i] for i in capped)
            mass = sum(x[i] for i in free)
            x = [Fraction(caps[i]) if i in capped else x[i] * budget / mass for i in range(len(x))]
    out = [math.floor(v) for v in x]
    by_fraction = sorted(range(len(x)), key=lambda i: (-(x[i] - out[i]), i))
    for i in by_fraction[: total - sum(out)]:
        out[i] += 1
    return out


def ref_pyramid(base: int, layers: int, n_valid: int, beta: int, exact: bool) -> list[int]:
    if layers == 1:
        return [min(base, n_valid)]
    low, high = base // beta, 2 * base - base // beta
    if high >= n_valid:
        high, low = n_valid, 2 * base - n_valid
    if exact:
        ideal = [high - Fraction(layer * (high - low), layers - 1) for layer in range(layers)]
        out = ref_round_exact(ideal, layers * base)
    else:
        out = [high - layer * ((high - low) // (layers - 1)) for layer in range(layers)]
    return [min(max(c, 0), n_valid) for c in out]


def ref_adakv(rows: list[list[float]], base: int, alpha: float, normalize: bool, exact: bool = False) -> list[int]:
    """AdaKV split of one batch row, written from the spec with Python lists."""
    floor = math.floor(alpha * base)
    entries = []
    for head, row in enumerate(rows):
        ranked = sorted(row, reverse=True)
        if normalize:
            ratio = sum(ranked[:base]) / sum(ranked)
            ranked = [x * ratio for x in ranked]
        entries += [(x, head) for x in ranked]
    entries.sort(key=lambda e: -e[0])  # stable: ties keep the lower head first
    counts = [0] * len(rows)
    for _, head in entries[: len(rows) * base]:
        counts[head] += 1
    if exact:
        a = Fraction(str(alpha))
        caps = [len(row) for row in rows]
        return ref_round_exact([(1 - a) * c + a * base for c in counts], len(rows) * base, caps)
    return [min(round(c * (1 - alpha) + floor), len(rows[0])) for c in counts]


def ref_sparsemm(scores: list[list[float]], base: int, ratio: float, n_valid: int | None, exact: bool) -> list[int]:
    flat = [x for row in scores for x in row]
    total = sum(flat)
    smallest = math.floor(base * ratio)
    spread = (base - smallest) * len(flat)
    if exact:
        mass = sum(Fraction(x) for x in flat)
        ideal = [Fraction(x) / mass * spread + smallest for x in flat]
        return ref_round_exact(ideal, len(flat) * base, None if n_valid is None else [n_valid] * len(flat))
    out = [round(x / total * spread + smallest) for x in flat]
    return out if n_valid is None else [min(c, n_valid) for c in out]


def ref_top(row: list[float], capacity: int) -> list[int]:
    ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return sorted(i for i in ranked[:capacity] if row[i] != float("-inf"))


# ---------------------------------------------------------------------------------------------------------------
# largest-remainder rounding


def test_apportion_hand_examples() -> None:
    # 1/3 each of 2: floors 0, 0, 0; two units to the largest fractions, ties to the lower index
    assert apportion([Fraction(2, 3)] * 3, 2) == [1, 1, 0]
    assert apportion([Fraction(5, 2), Fraction(7, 2), Fraction(4)], 10) == [3, 3, 4]
    # capped at 3: the 3 units over the cap go to the others in proportion (1 : 3)
    assert apportion([Fraction(1), Fraction(3), Fraction(6)], 10, [10, 10, 3]) == [2, 5, 3]  # 1.75, 5.25, 3
    # the total cannot be reached: everything at its cap
    assert apportion([Fraction(4), Fraction(4)], 8, [3, 2]) == [3, 2]


def test_apportion_matches_reference_on_random_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = 2 + trial % 7
        weights = (torch.rand(n, generator=generator) ** 2).tolist()
        total = 5 + 13 * trial
        mass = sum(Fraction(w) for w in weights)
        ideal = [Fraction(w) / mass * total for w in weights]
        caps = [int(c) for c in torch.randint(0, total, (n,), generator=generator)] if trial % 2 else None
        got = apportion(ideal, total, caps)
        assert got == ref_round_exact(ideal, total, caps)
        assert sum(got) == (total if caps is None else min(total, sum(caps)))
        if caps is None:
            assert all(abs(g - x) < 1 for g, x in zip(got, ideal))


# ---------------------------------------------------------------------------------------------------------------
# PyramidKV


def test_pyramid_spec_numbers_base_32_on_28_layers() -> None:
    # official: min = 32 // 20 = 1, max = 63, step = 62 // 27 = 2
    official = pyramid_capacities(32, 28, n_valid=1000, exact_total=False)
    assert official == [63 - 2 * layer for layer in range(28)]
    assert official[0] == 63 and official[-1] == 9
    assert sum(official) == 1008  # floored step: mean 36 > base 32, as in the reference code
    # exact (default): 63 - 62 l / 27 rounded by largest remainder, sum exactly 28 * 32
    exact = pyramid_capacities(32, 28, n_valid=1000)
    assert sum(exact) == 28 * 32
    assert exact[0] == 63 and exact[-1] == 1
    assert exact[:4] == [63, 61, 58, 56]  # 63, 60.70, 58.41, 56.11
    assert all(a >= b for a, b in itertools.pairwise(exact))
    assert all(abs(c - (63 - Fraction(62 * layer, 27))) < 1 for layer, c in enumerate(exact))


def test_pyramid_smollm2_budget_128_keeps_the_nominal_total() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads, window 32, budget 128 -> base 96; nominal 30 * 3 * 128 = 11,520 entries
    window, heads = 32, 3
    official = pyramid_capacities(96, 30, n_valid=4000, exact_total=False)
    assert heads * (sum(official) + 30 * window) == 11_970  # the measurement
    exact = pyramid_capacities(96, 30, n_valid=4000)
    assert heads * (sum(exact) + 30 * window) == 11_520


def test_pyramid_clamps_when_max_reaches_the_prompt() -> None:
    # min = 5, max = 195 >= 150 -> max = 150, min = 50; official step = 100 // 3 = 33
    assert pyramid_capacities(100, 4, n_valid=150, exact_total=False) == [150, 117, 84, 51]
    assert pyramid_capacities(100, 4, n_valid=150) == [150, 117, 83, 50]  # 150, 116.7, 83.3, 50: sum 400
    # max = 63 >= 40 -> max = 40, min = 24, official step = 16 // 27 = 0
    assert pyramid_capacities(32, 28, n_valid=40, exact_total=False) == [40] * 28
    exact = pyramid_capacities(32, 28, n_valid=40)
    assert sum(exact) == 28 * 32 and exact[0] == 40 and exact[-1] == 24
    # base larger than the prompt: everything is kept, the closest reachable total (below nominal)
    for exact_total in (True, False):
        assert pyramid_capacities(50, 3, n_valid=30, exact_total=exact_total) == [30, 30, 30]


def test_pyramid_other_betas_single_layer_and_zero() -> None:
    # min = 64 // 8 = 8, max = 120, official step = 112 // 3 = 37
    assert pyramid_capacities(64, 4, n_valid=10_000, beta=8, exact_total=False) == [120, 83, 46, 9]
    assert pyramid_capacities(64, 4, n_valid=10_000, beta=8) == [120, 83, 45, 8]  # 120, 82.7, 45.3, 8
    for exact_total in (True, False):
        assert pyramid_capacities(32, 1, n_valid=1000, exact_total=exact_total) == [32]
        assert pyramid_capacities(32, 1, n_valid=10, exact_total=exact_total) == [10]
        assert pyramid_capacities(0, 3, n_valid=10, exact_total=exact_total) == [0, 0, 0]


@pytest.mark.parametrize("exact_total", [True, False])
def test_pyramid_matches_independent_implementation(exact_total: bool) -> None:
    for base in (0, 1, 7, 32, 96, 250):
        for layers in (1, 2, 5, 28, 30, 32):
            for n_valid in (5, 100, 300, 10_000):
                for beta in (1, 20):
                    got = pyramid_capacities(base, layers, n_valid, beta=beta, exact_total=exact_total)
                    assert got == ref_pyramid(base, layers, n_valid, beta, exact_total), (base, layers, n_valid)
                    if exact_total and base <= n_valid:
                        assert sum(got) == layers * base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1, "num_layers": 2, "n_valid": 5},
        {"base": 4, "num_layers": 0, "n_valid": 5},
        {"base": 4, "num_layers": 2, "n_valid": -3},
        {"base": 4, "num_layers": 2, "n_valid": 5, "beta": 0},
        {"base": 4.0, "num_layers": 2, "n_valid": 5},
    ],
)
def test_pyramid_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be an int"):
        pyramid_capacities(**kwargs)
    with pytest.raises(ValueError, match="exact_total must be a bool"):
        pyramid_capacities(4, 2, 5, exact_total=1)


# ---------------------------------------------------------------------------------------------------------------
# AdaKV


def test_adakv_hand_example() -> None:
    # base = 3, alpha = 0.4 -> floor = 1; per-head top-3 mass ratios 0.8, 0.94, 0.74.
    # normalised: h0 .4 .16 .08 .08 .04 .04 | h1 .846 .0188 x5 | h2 .222 .185 .1406 .1184 .037 .037
    # global top 9: h1 x1, h0 x4 (.4 .16 .08 .08), h2 x4
    scores = torch.tensor(
        [
            [
                [0.1, 0.5, 0.05, 0.2, 0.1, 0.05],
                [0.02, 0.02, 0.9, 0.02, 0.02, 0.02],
                [0.05, 0.3, 0.25, 0.19, 0.16, 0.05],
            ]
        ]
    )
    # official: c = round(cnt * 0.6 + 1) = 3, 2, 3: total 8, not 3 * 3 = 9 (rounding)
    official = adakv_capacities(scores, 3, floor_ratio=0.4, exact_total=False)
    assert official.dtype == torch.long
    assert official.tolist() == [[3, 2, 3]]
    # exact: cnt * 0.6 + 0.4 * 3 = 3.6, 1.8, 3.6 -> floors 3, 1, 3 and two units to .8 (h1) then .6 (h0, lower)
    exact = adakv_capacities(scores, 3, floor_ratio=0.4)
    assert exact.dtype == torch.long
    assert exact.tolist() == [[4, 2, 3]]
    assert exact.sum().item() == 9


@pytest.mark.parametrize("exact_total", [True, False])
def test_adakv_normalisation_changes_the_split(exact_total: bool) -> None:
    # base 2, no floor. h0 = .3 .3 .3 .1 (top-2 mass .6), h1 = .5 .25 .2 .05 (top-2 mass .75).
    # raw top 4: .5 (h1), .3 .3 .3 (h0) -> counts 3, 1
    # normalised: h0 .18 .18 .18 .06, h1 .375 .1875 .15 .0375 -> top 4: .375 .1875 (h1), .18 .18 (h0) -> 2, 2
    scores = torch.tensor([[[0.3, 0.1, 0.3, 0.3], [0.05, 0.2, 0.5, 0.25]]])
    kwargs = {"floor_ratio": 0.0, "exact_total": exact_total}
    assert adakv_capacities(scores, 2, normalize=False, **kwargs).tolist() == [[3, 1]]
    assert adakv_capacities(scores, 2, normalize=True, **kwargs).tolist() == [[2, 2]]


@pytest.mark.parametrize("exact_total", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("base", "alpha"), [(4, 0.2), (7, 0.5), (3, 0.0), (10, 1.0), (9, 0.3)])
def test_adakv_matches_independent_implementation(exact_total: bool, normalize: bool, base: int, alpha: float) -> None:
    generator = torch.Generator().manual_seed(base * 10 + int(alpha * 10))
    scores = torch.rand(3, 4, 12, generator=generator) ** 3  # skewed, non-negative
    got = adakv_capacities(scores, base, floor_ratio=alpha, normalize=normalize, exact_total=exact_total)
    assert got.shape == (3, 4)
    for b in range(3):
        assert got[b].tolist() == ref_adakv(scores[b].double().tolist(), base, alpha, normalize, exact_total)
        if exact_total:
            assert got[b].sum().item() == 4 * base
            assert got[b].min().item() >= math.floor(alpha * base)


def test_adakv_exact_total_on_many_splits() -> None:
    generator = torch.Generator().manual_seed(21)
    for trial in range(30):
        heads = 2 + trial % 7
        scores = torch.rand(1, heads, 64, generator=generator) ** 4
        base = 1 + 2 * trial
        got = adakv_capacities(scores, base, floor_ratio=(trial % 5) / 5)
        assert got.sum().item() == heads * base
        official = adakv_capacities(scores, base, floor_ratio=(trial % 5) / 5, exact_total=False)
        assert (got - official).abs().max().item() <= 1  # the same split, rounded differently


@pytest.mark.parametrize("exact_total", [True, False])
def test_adakv_candidates_compete_alone(exact_total: bool) -> None:
    generator = torch.Generator().manual_seed(5)
    scores = torch.rand(2, 3, 10, generator=generator)
    candidates = torch.tensor([True, False, True, True, False, True, True, False, True, True])
    got = adakv_capacities(scores, 3, candidates=candidates, exact_total=exact_total)
    expected = adakv_capacities(scores[..., candidates], 3, exact_total=exact_total)
    assert torch.equal(got, expected)
    # non-candidate scores do not matter
    noisy = scores.clone()
    noisy[..., ~candidates] = 50.0
    assert torch.equal(adakv_capacities(noisy, 3, candidates=candidates, exact_total=exact_total), got)


@pytest.mark.parametrize("exact_total", [True, False])
def test_adakv_clamps_to_the_available_tokens(exact_total: bool) -> None:
    scores = torch.tensor([[[0.9, 0.8, 0.7], [0.1, 0.05, 0.01]]])
    got = adakv_capacities(scores, 5, floor_ratio=0.2, exact_total=exact_total)  # base > L: all 3 kept per head
    assert got.tolist() == [[3, 3]]
    assert adakv_capacities(scores, 0, exact_total=exact_total).tolist() == [[0, 0]]


def test_adakv_capped_head_passes_its_share_to_the_others() -> None:
    # head 1 competes with 2 tokens only; its ideal share is larger, the rest goes to heads 0 and 2
    scores = torch.tensor([[[0.1] * 8, [0.9, 0.8] + [0.0] * 6, [0.05] * 8]])
    candidates = torch.ones(1, 3, 8, dtype=torch.bool)
    candidates[0, 1, 2:] = False
    got = adakv_capacities(scores, 4, floor_ratio=0.2, candidates=candidates)
    assert got[0, 1].item() == 2
    assert got.sum().item() == 3 * 4
    assert got[0].tolist() == ref_adakv_masked(scores[0], candidates[0], 4, 0.2)


def ref_adakv_masked(scores: torch.Tensor, candidates: torch.Tensor, base: int, alpha: float) -> list[int]:
    rows = [scores[h][candidates[h]].double().tolist() for h in range(scores.shape[0])]
    entries = []
    for head, row in enumerate(rows):
        ranked = sorted(row, reverse=True)
        ratio = sum(ranked[:base]) / sum(ranked)
        entries += [(x * ratio, head) for x in ranked]
    entries.sort(key=lambda e: -e[0])
    counts = [0] * len(rows)
    for _, head in entries[: len(rows) * base]:
        counts[head] += 1
    a = Fraction(str(alpha))
    return ref_round_exact([(1 - a) * c + a * base for c in counts], len(rows) * base, [len(r) for r in rows])


def test_adakv_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        adakv_capacities(-torch.rand(1, 2, 4), 2)
    with pytest.raises(ValueError, match="shape"):
        adakv_capacities(torch.rand(2, 4), 2)
    with pytest.raises(ValueError, match="floor_ratio"):
        adakv_capacities(torch.rand(1, 2, 4), 2, floor_ratio=1.5)
    with pytest.raises(ValueError, match="base"):
        adakv_capacities(torch.rand(1, 2, 4), -1)
    with pytest.raises(ValueError, match="broadcast"):
        adakv_capacities(torch.rand(1, 2, 4), 2, candidates=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="exact_total"):
        adakv_capacities(torch.rand(1, 2, 4), 2, exact_total="yes")


# ---------------------------------------------------------------------------------------------------------------
# SparseMM


def test_sparsemm_hand_example() -> None:
    # normalised [[.125, .375], [0, .5]], min = floor(10 * .1) = 1, spread = 9 * 2 layers * 2 heads = 36
    # ideal 4.5 + 1, 13.5 + 1, 0 + 1, 18 + 1 = 5.5, 14.5, 1, 19
    head_scores = torch.tensor([[1.0, 3.0], [0.0, 4.0]])
    official = sparsemm_capacities(head_scores, 10, exact_total=False)
    assert official.dtype == torch.long
    assert official.tolist() == [[6, 14], [1, 19]]  # round half to even
    exact = sparsemm_capacities(head_scores, 10)  # floors 5, 14, 1, 19; one unit to .5 (lower index first)
    assert exact.tolist() == [[6, 14], [1, 19]]
    assert exact.sum().item() == 2 * 2 * 10
    # capped at 15: official loses 4 entries; exact gives them to the other heads in proportion (5.5 : 14.5 : 1),
    # which caps (0, 1) too: 5.5, 15, 1, 15 -> the 10 left go 5.5 : 1 -> 8.46, 1.54 -> 8, 2
    assert sparsemm_capacities(head_scores, 10, n_valid=15, exact_total=False).tolist() == [[6, 14], [1, 15]]
    assert sparsemm_capacities(head_scores, 10, n_valid=15).tolist() == [[8, 15], [2, 15]]
    per_query_head = torch.tensor([[0.5, 0.5, 1.0, 2.0], [0.0, 0.0, 1.0, 3.0]])  # summed over GQA groups of 2
    for exact_total in (True, False):
        got = sparsemm_capacities(per_query_head, 10, num_kv_heads=2, exact_total=exact_total)
        assert got.tolist() == [[6, 14], [1, 19]]


def test_sparsemm_matches_formula_loops() -> None:
    generator = torch.Generator().manual_seed(3)
    head_scores = torch.rand(5, 4, generator=generator)
    got = sparsemm_capacities(head_scores, 24, min_ratio=0.25, exact_total=False)
    total = head_scores.double().sum().item()
    smallest = math.floor(24 * 0.25)
    for layer in range(5):
        for head in range(4):
            share = head_scores[layer, head].item() / total
            assert got[layer, head].item() == round(share * (24 - smallest) * 5 * 4 + smallest)


@pytest.mark.parametrize("exact_total", [True, False])
@pytest.mark.parametrize("n_valid", [None, 40, 30, 12])
def test_sparsemm_matches_independent_implementation(exact_total: bool, n_valid: int | None) -> None:
    generator = torch.Generator().manual_seed(8)
    head_scores = torch.rand(6, 3, generator=generator) ** 3
    head_scores[2, 1] = 4.0  # one dominant "visual head", capped when n_valid is small
    got = sparsemm_capacities(head_scores, 16, min_ratio=0.1, n_valid=n_valid, exact_total=exact_total)
    want = ref_sparsemm(head_scores.double().tolist(), 16, 0.1, n_valid, exact_total)
    assert got.reshape(-1).tolist() == want
    if exact_total:
        assert got.sum().item() == (6 * 3 * 16 if n_valid is None or n_valid >= 16 else 6 * 3 * n_valid)
        assert got.min().item() >= math.floor(16 * 0.1)


def test_sparsemm_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        sparsemm_capacities(torch.zeros(2, 2), 8)
    with pytest.raises(ValueError, match="non-negative"):
        sparsemm_capacities(torch.tensor([[1.0, -1.0]]), 8)
    with pytest.raises(ValueError, match="shape"):
        sparsemm_capacities(torch.ones(3), 8)
    with pytest.raises(ValueError, match="multiple"):
        sparsemm_capacities(torch.ones(2, 3), 8, num_kv_heads=2)
    with pytest.raises(ValueError, match="min_ratio"):
        sparsemm_capacities(torch.ones(2, 2), 8, min_ratio=-0.1)
    with pytest.raises(ValueError, match="exact_total"):
        sparsemm_capacities(torch.ones(2, 2), 8, exact_total=None)


# ---------------------------------------------------------------------------------------------------------------
# selection


def test_top_capacity_indices_matches_brute_force() -> None:
    generator = torch.Generator().manual_seed(11)
    scores = torch.rand(2, 3, 9, generator=generator)
    capacities = torch.tensor([[0, 4, 9], [2, 5, 1]])
    got = top_capacity_indices(scores, capacities)
    assert isinstance(got, RaggedIndices)
    assert len(got) == 2
    assert torch.equal(got.lengths, capacities)
    for b in range(2):
        for h in range(3):
            assert got[b][h].tolist() == ref_top(scores[b, h].tolist(), capacities[b, h].item())
            assert got[b][h].dtype == torch.long
    assert [[row.tolist() for row in per_batch] for per_batch in got.to_lists()] == [
        [row.tolist() for row in got[b]] for b in range(2)
    ]


def test_top_capacity_indices_ties_prefer_lower_positions() -> None:
    scores = torch.tensor([[[1.0, 2.0, 2.0, 1.0, 2.0, 1.0]]])
    got = top_capacity_indices(scores, torch.tensor([[2]]))
    assert got[0][0].tolist() == [1, 2]
    got = top_capacity_indices(scores, torch.tensor([[4]]))
    assert got[0][0].tolist() == [0, 1, 2, 4]
    assert top_capacity_indices(torch.zeros(1, 1, 5), torch.tensor([[3]]))[0][0].tolist() == [0, 1, 2]


def test_top_capacity_indices_never_selects_non_candidates() -> None:
    neg_inf = float("-inf")
    scores = torch.tensor([[[0.5, neg_inf, 0.1, neg_inf], [neg_inf, neg_inf, neg_inf, 0.3]]])
    got = top_capacity_indices(scores, torch.tensor([[3, 2]]))
    assert got[0][0].tolist() == [0, 2]
    assert got[0][1].tolist() == [3]
    assert got.lengths.tolist() == [[2, 1]]


def test_ragged_indices_layout() -> None:
    generator = torch.Generator().manual_seed(12)
    scores = torch.rand(2, 2, 6, generator=generator)
    capacities = torch.tensor([[1, 3], [0, 2]])
    got = top_capacity_indices(scores, capacities)
    assert got.offsets.tolist() == [0, 1, 4, 4, 6]
    assert got.flat.shape == (6,)
    rows = [got[b][h] for b in range(2) for h in range(2)]
    assert torch.equal(torch.cat(rows), got.flat)
    padded, valid = got.padded(fill_value=-7)
    assert padded.shape == valid.shape == (2, 2, 3)
    for b in range(2):
        for h in range(2):
            count = capacities[b, h].item()
            assert padded[b, h, :count].tolist() == got[b][h].tolist()
            assert padded[b, h, count:].tolist() == [-7] * (3 - count)
            assert valid[b, h].tolist() == [True] * count + [False] * (3 - count)
    assert got[-1][1].tolist() == got[1][1].tolist()
    with pytest.raises(IndexError):
        got[2]


def test_top_uniform_indices_matches_brute_force_and_ragged_path() -> None:
    generator = torch.Generator().manual_seed(13)
    scores = torch.rand(2, 3, 10, generator=generator)
    got = top_uniform_indices(scores, 4)
    assert got.shape == (2, 3, 4)
    assert got.dtype == torch.long
    ragged = top_capacity_indices(scores, torch.full((2, 3), 4))
    for b in range(2):
        for h in range(3):
            assert got[b, h].tolist() == ref_top(scores[b, h].tolist(), 4)
            assert torch.equal(got[b, h], ragged[b][h])
    assert top_uniform_indices(torch.ones(1, 1, 5), 2).tolist() == [[[0, 1]]]
    assert top_uniform_indices(scores, 0).shape == (2, 3, 0)


def test_selection_rejects_bad_inputs() -> None:
    scores = torch.rand(1, 2, 5)
    with pytest.raises(ValueError, match="shape"):
        top_capacity_indices(scores, torch.tensor([3, 3]))
    with pytest.raises(ValueError, match=r"\[0, L=5\]"):
        top_capacity_indices(scores, torch.tensor([[6, 1]]))
    with pytest.raises(ValueError, match=r"\[0, L=5\]"):
        top_capacity_indices(scores, torch.tensor([[-1, 1]]))
    with pytest.raises(TypeError, match="integer"):
        top_capacity_indices(scores, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        top_capacity_indices(torch.full((1, 2, 5), float("nan")), torch.tensor([[1, 1]]))
    with pytest.raises(ValueError, match="k must be"):
        top_uniform_indices(scores, 6)
