"""AudioKV's pure math: Spectral Score Smoothing and HeadKV-style budgets against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from omnipress.kv.spectral import cutoff_bins, even_positions, headkv_capacities, lowpass_mask, spectral_smooth


def brute_smooth(x, *, alpha, keep, taper, padding="reflect", cutoff=None):
    """SSS by an explicit O(n^2) real DFT, one row at a time, in float64."""
    out = []
    for row in x.double():
        length = row.numel()
        sig = torch.cat([row, row.flip(0)]) if padding == "reflect" else row.clone()
        mean = 0.0
        if padding == "mean":
            mean = float(sig.mean())
            sig = sig - mean
        n = sig.numel()
        bins = n // 2 + 1
        kc = cutoff if cutoff is not None else max(1, math.ceil(keep * bins))
        gains = []
        for k in range(bins):
            if taper == 0:
                gains.append(1.0 if k < kc else 0.0)
            else:
                over = max(0.0, k - (kc - 1))
                gains.append(math.exp(-((over / (taper * kc)) ** 2)))
        m = torch.arange(n, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)
        angle = 2 * math.pi * k.view(-1, 1) * m.view(1, -1) / n  # (bins, n): the explicit DFT matrix
        re, im = (torch.cos(angle) * sig).sum(-1), -(torch.sin(angle) * sig).sum(-1)
        weight = torch.full((bins,), 2.0, dtype=torch.float64)  # bins mirrored in the full spectrum count twice
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0
        t = torch.arange(length, dtype=torch.float64)
        back = 2 * math.pi * k.view(1, -1) * t.view(-1, 1) / n  # (length, bins)
        coef = weight * torch.tensor(gains, dtype=torch.float64)
        low = ((coef * (re * torch.cos(back) - im * torch.sin(back))).sum(-1) / n) + mean
        out.append((alpha * low + (1 - alpha) * row).clamp_min(0))
    return torch.stack(out).float()


@pytest.mark.parametrize(
    ("alpha", "keep", "taper", "padding"),
    [(1.0, 0.2, 0.5, "reflect"), (0.6, 0.35, 0.0, "reflect"), (0.8, 0.3, 0.5, "mean"), (1.0, 0.25, 1.0, "none")],
)
def test_smoothing_matches_an_explicit_dft(alpha, keep, taper, padding):
    x = torch.rand(3, 13, generator=torch.Generator().manual_seed(1))
    got = spectral_smooth(x, alpha=alpha, keep=keep, taper=taper, padding=padding)
    torch.testing.assert_close(
        got, brute_smooth(x, alpha=alpha, keep=keep, taper=taper, padding=padding), atol=1e-5, rtol=0
    )


def test_alpha_zero_and_all_bins_are_the_identity():
    x = torch.rand(2, 4, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(spectral_smooth(x, alpha=0.0), x)
    for padding in ("reflect", "mean", "none"):
        torch.testing.assert_close(spectral_smooth(x, alpha=1.0, keep=1.0, padding=padding), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(spectral_smooth(x, keep=1.0, taper=0.0), x, atol=1e-6, rtol=0)
    assert not torch.allclose(spectral_smooth(x, alpha=1.0, keep=0.1), x, atol=1e-3)


def test_mean_is_preserved_and_scores_stay_non_negative():
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(2)) ** 4
    y = spectral_smooth(x, alpha=1.0, keep=0.05, clamp=False)
    torch.testing.assert_close(y.mean(-1), x.mean(-1), atol=1e-6, rtol=0)
    assert bool((spectral_smooth(x, alpha=1.0, keep=0.05) >= 0).all())


@pytest.mark.parametrize("seed", range(4))
def test_top_k_after_smoothing_picks_a_contiguous_block_on_a_noisy_step(seed):
    g = torch.Generator().manual_seed(seed)
    n, lo, hi = 200, 80, 120
    step = torch.zeros(n)
    step[lo:hi] = 1.0
    noisy = (step + 0.3 * torch.randn(n, generator=g)).clamp_min(0)  # step plus white noise
    k = hi - lo
    raw_top = noisy.topk(k).indices.sort().values
    assert not bool((raw_top.diff() == 1).all())  # raw top-k: scattered
    top = spectral_smooth(noisy.view(1, -1), alpha=1.0, keep=0.05).view(-1).topk(k).indices.sort().values
    assert bool((top.diff() == 1).all())  # one contiguous block
    assert lo - 3 <= int(top[0]) <= lo + 3  # ... on the step


def test_no_wrap_around_between_the_ends():
    x = torch.zeros(1, 100)
    x[0, -10:] = 1.0  # all the mass at the end
    reflected = spectral_smooth(x, alpha=1.0, keep=0.1)
    periodic = spectral_smooth(x, alpha=1.0, keep=0.1, padding="none")
    assert float(reflected[0, :10].max()) < 1e-3  # the start stays quiet
    assert float(periodic[0, :10].max()) > 0.05  # the periodic FFT leaks the end into the start


def test_cutoff_in_hertz_scales_with_the_clip():
    assert cutoff_bins(100, cutoff_hz=1.0, tokens_per_second=25.0) == (8, 101)  # 200 samples: bin k = k/8 Hz
    assert cutoff_bins(400, cutoff_hz=1.0, tokens_per_second=25.0)[0] == 32
    assert cutoff_bins(100, keep=0.1, padding="none") == (6, 51)
    x = torch.rand(2, 50, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        spectral_smooth(x, cutoff_hz=2.0, tokens_per_second=25.0, taper=0.0),
        brute_smooth(x, alpha=0.8, keep=None, taper=0.0, cutoff=8),
        atol=1e-5,
        rtol=0,
    )
    with pytest.raises(ValueError, match="keep"):
        spectral_smooth(x, keep=0.0)
    with pytest.raises(ValueError, match="alpha"):
        spectral_smooth(x, alpha=1.5)
    with pytest.raises(ValueError, match="padding"):
        spectral_smooth(x, padding="wrap")


def test_lowpass_mask_shape():
    assert lowpass_mask(10, 3, 0.0).tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    soft = lowpass_mask(10, 3, 0.5)
    assert soft[:3].tolist() == [1, 1, 1] and bool((soft[3:].diff() <= 0).all()) and 0 < float(soft[3]) < 1
    assert lowpass_mask(4, 9, 0.5).tolist() == [1, 1, 1, 1]


def brute_headkv(importance, base, beta, temperature, upper):
    pooled_each = math.floor(base / beta)
    floor, pool = base - pooled_each, len(importance) * pooled_each
    weights = [float(v) ** temperature for v in importance]
    total = sum(weights)
    return [floor + pool * (w / total if total > 0 else 1 / len(weights)) for w in weights]


@pytest.mark.parametrize("seed", range(6))
def test_headkv_budgets_sum_to_the_layer_total_within_bounds(seed):
    g = torch.Generator().manual_seed(seed)
    heads = int(torch.randint(2, 9, (1,), generator=g))
    importance = torch.rand(heads, generator=g) ** 3
    base = int(torch.randint(1, 40, (1,), generator=g))
    upper = int(torch.randint(base, 3 * base + 2, (1,), generator=g))
    beta = [1.005, 1.5, 2.0, 4.0][seed % 4]
    got = headkv_capacities(importance, base, beta=beta, temperature=1 + seed % 2, upper=upper)
    assert int(got.sum()) == min(heads * base, heads * upper)
    assert bool((got >= 1).all()) and bool((got <= upper).all())
    ideal = brute_headkv(importance.tolist(), base, beta, 1 + seed % 2, upper)
    if max(ideal) <= upper:  # no cap bites: every budget is its ideal value rounded up or down
        assert all(abs(int(b) - v) < 1 for b, v in zip(got, ideal))
    order = importance.argsort()
    assert bool((got[order].diff() >= -1).all())  # more important heads never get (noticeably) less


def test_headkv_caps_pass_the_surplus_on_and_validate():
    got = headkv_capacities(torch.tensor([0.0, 1.0, 3.0, 0.0]), 10, beta=2.0, upper=torch.tensor([20, 20, 12, 20]))
    assert got.tolist() == [7, 14, 12, 7] and int(got.sum()) == 40
    assert headkv_capacities(torch.zeros(3), 5).tolist() == [5, 5, 5]  # no signal: uniform
    assert headkv_capacities(torch.tensor([0.0, 1.0]), 4, beta=1.0001).tolist() == [1, 7]
    with pytest.raises(ValueError, match="beta"):
        headkv_capacities(torch.ones(2), 4, beta=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        headkv_capacities(torch.tensor([1.0, -1.0]), 4)
    with pytest.raises(ValueError, match="temperature"):
        headkv_capacities(torch.ones(2), 4, temperature=0.5)


def brute_even(allowed: list[bool], count: int) -> list[int]:
    """`count` allowed positions, one per stride of `L / count`, the one nearest each stride's centre (rounding
    half up), by the definition."""
    cols = [i for i, a in enumerate(allowed) if a]
    length, m = len(cols), min(count, len(cols))
    return [cols[math.floor((j + 0.5) * length / m)] for j in range(m)] if m else []


@pytest.mark.parametrize("seed", range(5))
def test_even_positions_spread_the_count_over_the_allowed_positions(seed):
    g = torch.Generator().manual_seed(seed)
    allowed = torch.rand(3, 4, 37, generator=g) < 0.6
    counts = torch.randint(0, 30, (3, 4), generator=g)
    got = even_positions(allowed, counts)
    assert not bool((got & ~allowed).any())
    for b in range(3):
        for h in range(4):
            want = brute_even(allowed[b, h].tolist(), int(counts[b, h]))
            assert got[b, h].nonzero().flatten().tolist() == want
    # one allowed mask broadcast over heads with their own counts; a stride of 4 over 12 positions
    row = torch.zeros(1, 1, 20, dtype=torch.bool)
    row[..., 4:16] = True
    spread = even_positions(row.expand(1, 2, 20), torch.tensor([[3, 0]]))
    assert spread[0, 0].nonzero().flatten().tolist() == [6, 10, 14] and not bool(spread[0, 1].any())
    with pytest.raises(ValueError, match="bool"):
        even_positions(torch.ones(4), torch.tensor(1))
    with pytest.raises(ValueError, match=">= 0"):
        even_positions(row, torch.tensor([[-1]]))
