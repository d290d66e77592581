"""Budget rules and top-k selection against hand-computed answers and independent loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from omnipress.kv.budgets import (
    RaggedIndices,
    adakv_capacities,
    pyramid_capacities,
    sparsemm_capacities,
    top_capacity_indices,
    top_uniform_indices,
)

# ---------------------------------------------------------------------------------------------------------------
# independent straightforward implementations


def ref_adakv(rows: list[list[float]], base: int, alpha: float, normalize: bool) -> list[int]:
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
    return [min(round(c * (1 - alpha) + floor), len(rows[0])) for c in counts]


def ref_top(row: list[float], capacity: int) -> list[int]:
    ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return sorted(i for i in ranked[:capacity] if row[i] != float("-inf"))


# ---------------------------------------------------------------------------------------------------------------
# PyramidKV


def test_pyramid_spec_numbers_base_32_on_28_layers() -> None:
    # min = 32 // 20 = 1, max = 63, step = 62 // 27 = 2
    capacities = pyramid_capacities(32, 28, n_valid=1000)
    assert capacities == [63 - 2 * layer for layer in range(28)]
    assert capacities[0] == 63 and capacities[-1] == 9
    assert sum(capacities) == 1008  # floored step: mean 36 > base 32, as in the reference code


def test_pyramid_clamps_when_max_reaches_the_prompt() -> None:
    # min = 5, max = 195 >= 150 -> max = 150, min = 50, step = 100 // 3 = 33
    assert pyramid_capacities(100, 4, n_valid=150) == [150, 117, 84, 51]
    # max = 63 >= 40 -> max = 40, min = 24, step = 16 // 27 = 0
    assert pyramid_capacities(32, 28, n_valid=40) == [40] * 28
    # base larger than the prompt: everything is kept
    assert pyramid_capacities(50, 3, n_valid=30) == [30, 30, 30]


def test_pyramid_other_betas_single_layer_and_zero() -> None:
    # min = 64 // 8 = 8, max = 120, step = 112 // 3 = 37
    assert pyramid_capacities(64, 4, n_valid=10_000, beta=8) == [120, 83, 46, 9]
    assert pyramid_capacities(32, 1, n_valid=1000) == [32]
    assert pyramid_capacities(32, 1, n_valid=10) == [10]
    assert pyramid_capacities(0, 3, n_valid=10) == [0, 0, 0]


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


# ---------------------------------------------------------------------------------------------------------------
# AdaKV


def test_adakv_hand_example() -> None:
    # base = 3, alpha = 0.4 -> floor = 1; per-head top-3 mass ratios 0.8, 0.94, 0.74.
    # normalised: h0 .4 .16 .08 .08 .04 .04 | h1 .846 .0188 x5 | h2 .222 .185 .1406 .1184 .037 .037
    # global top 9: h1 x1, h0 x4 (.4 .16 .08 .08), h2 x4 -> c = round(cnt * 0.6 + 1) = 3, 2, 3
    scores = torch.tensor(
        [
            [
                [0.1, 0.5, 0.05, 0.2, 0.1, 0.05],
                [0.02, 0.02, 0.9, 0.02, 0.02, 0.02],
                [0.05, 0.3, 0.25, 0.19, 0.16, 0.05],
            ]
        ]
    )
    capacities = adakv_capacities(scores, 3, floor_ratio=0.4)
    assert capacities.dtype == torch.long
    assert capacities.tolist() == [[3, 2, 3]]
    assert capacities.sum().item() == 8  # not 3 * 3 = 9: rounding (documented)


def test_adakv_normalisation_changes_the_split() -> None:
    # base 2, no floor. h0 = .3 .3 .3 .1 (top-2 mass .6), h1 = .5 .25 .2 .05 (top-2 mass .75).
    # raw top 4: .5 (h1), .3 .3 .3 (h0) -> counts 3, 1
    # normalised: h0 .18 .18 .18 .06, h1 .375 .1875 .15 .0375 -> top 4: .375 .1875 (h1), .18 .18 (h0) -> 2, 2
    scores = torch.tensor([[[0.3, 0.1, 0.3, 0.3], [0.05, 0.2, 0.5, 0.25]]])
    assert adakv_capacities(scores, 2, floor_ratio=0.0, normalize=False).tolist() == [[3, 1]]
    assert adakv_capacities(scores, 2, floor_ratio=0.0, normalize=True).tolist() == [[2, 2]]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("base", "alpha"), [(4, 0.2), (7, 0.5), (3, 0.0), (10, 1.0)])
def test_adakv_matches_independent_implementation(normalize: bool, base: int, alpha: float) -> None:
    generator = torch.Generator().manual_seed(base * 10 + int(alpha * 10))
    scores = torch.rand(3, 4, 12, generator=generator) ** 3  # skewed, non-negative
    got = adakv_capacities(scores, base, floor_ratio=alpha, normalize=normalize)
    assert got.shape == (3, 4)
    for b in range(3):
        assert got[b].tolist() == ref_adakv(scores[b].double().tolist(), base, alpha, normalize)


def test_adakv_candidates_compete_alone() -> None:
    generator = torch.Generator().manual_seed(5)
    scores = torch.rand(2, 3, 10, generator=generator)
    candidates = torch.tensor([True, False, True, True, False, True, True, False, True, True])
    got = adakv_capacities(scores, 3, candidates=candidates)
    expected = adakv_capacities(scores[..., candidates], 3)
    assert torch.equal(got, expected)
    # non-candidate scores do not matter
    noisy = scores.clone()
    noisy[..., ~candidates] = 50.0
    assert torch.equal(adakv_capacities(noisy, 3, candidates=candidates), got)


def test_adakv_clamps_to_the_available_tokens() -> None:
    scores = torch.tensor([[[0.9, 0.8, 0.7], [0.1, 0.05, 0.01]]])
    got = adakv_capacities(scores, 5, floor_ratio=0.2)  # base > L: every head could keep all 3
    assert got.tolist() == [[3, 3]]
    assert adakv_capacities(scores, 0).tolist() == [[0, 0]]


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


# ---------------------------------------------------------------------------------------------------------------
# SparseMM


def test_sparsemm_hand_example() -> None:
    # normalised [[.125, .375], [0, .5]], min = floor(10 * .1) = 1, spread = 9 * 2 layers * 2 heads = 36
    # c = round(4.5 + 1), round(13.5 + 1), round(0 + 1), round(18 + 1) = 6, 14 (half to even), 1, 19
    head_scores = torch.tensor([[1.0, 3.0], [0.0, 4.0]])
    got = sparsemm_capacities(head_scores, 10)
    assert got.dtype == torch.long
    assert got.tolist() == [[6, 14], [1, 19]]
    assert got.sum().item() == 2 * 2 * 10
    assert sparsemm_capacities(head_scores, 10, n_valid=15).tolist() == [[6, 14], [1, 15]]
    per_query_head = torch.tensor([[0.5, 0.5, 1.0, 2.0], [0.0, 0.0, 1.0, 3.0]])  # summed over GQA groups of 2
    assert sparsemm_capacities(per_query_head, 10, num_kv_heads=2).tolist() == [[6, 14], [1, 19]]


def test_sparsemm_matches_formula_loops() -> None:
    generator = torch.Generator().manual_seed(3)
    head_scores = torch.rand(5, 4, generator=generator)
    got = sparsemm_capacities(head_scores, 24, min_ratio=0.25)
    total = head_scores.double().sum().item()
    smallest = math.floor(24 * 0.25)
    for layer in range(5):
        for head in range(4):
            share = head_scores[layer, head].item() / total
            assert got[layer, head].item() == round(share * (24 - smallest) * 5 * 4 + smallest)


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
