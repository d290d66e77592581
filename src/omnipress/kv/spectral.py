"""AudioKV's pure math: Spectral Score Smoothing and HeadKV-style head budgets.

- `spectral_smooth`: Spectral Score Smoothing (SSS) of token scores along time: a tapered low-pass in the rFFT
  domain, blended with the raw scores. The signal is mirrored (even extension) before the FFT so that its two ends
  do not leak into each other (the FFT treats its input as periodic: a high score at the end of the clip would
  otherwise raise the scores at its start).
- `lowpass_mask`: the filter: 1 on the first `K_c` bins, then a Gaussian roll-off (no ringing from a hard cut).
- `headkv_capacities`: per-head budgets moved toward important heads (HeadKV's formula with a floor per head),
  rounded so that they sum exactly to the layer total.

AudioKV: Wang et al., 2026, https://arxiv.org/abs/2604.06694 (no public code; reconstruction in
docs/architecture.md). HeadKV: Fu et al., 2024, https://arxiv.org/abs/2410.19258.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from .budgets import apportion

PADDINGS = ("reflect", "mean", "none")


def lowpass_mask(num_bins: int, cutoff: int, taper: float = 0.5, *, device=None) -> Tensor:
    """Low-pass gain per rFFT bin, `(num_bins,)` float32.

    Gain 1 for bins `k < cutoff`, then `exp(-((k - cutoff + 1) / (taper * cutoff))**2)` (a Gaussian shoulder of
    width `taper * cutoff` bins); `taper = 0` is a hard cut. `cutoff >= num_bins` keeps every bin (gain 1).
    """
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1:
        raise ValueError(f"cutoff must be an int >= 1 (bin 0, the mean, is always kept), got {cutoff!r}")
    if not (isinstance(taper, (int, float)) and float(taper) >= 0.0 and math.isfinite(taper)):
        raise ValueError(f"taper must be a finite float >= 0, got {taper!r}")
    k = torch.arange(num_bins, dtype=torch.float32, device=device)
    if taper == 0:
        return (k < cutoff).float()
    width = float(taper) * cutoff
    over = (k - (cutoff - 1)).clamp_min(0.0)
    return torch.exp(-((over / width) ** 2))


def cutoff_bins(
    length: int,
    *,
    keep: float = 0.1,
    cutoff_hz: float | None = None,
    tokens_per_second: float = 25.0,
    padding: str = "reflect",
) -> tuple[int, int]:
    """`(cutoff, num_bins)` for a span of `length` tokens.

    The FFT runs over `n = 2 * length` samples with `padding="reflect"` (else `length`), giving `n // 2 + 1` bins.
    `cutoff = max(1, ceil(keep * num_bins))`, or with `cutoff_hz` the physical cutoff: bin `k` is the frequency
    `k * tokens_per_second / n` Hz, so `cutoff = max(1, ceil(cutoff_hz * n / tokens_per_second))` whatever the clip's
    duration.
    """
    n = 2 * length if padding == "reflect" else length
    num_bins = n // 2 + 1
    if cutoff_hz is not None:
        if not cutoff_hz > 0 or not tokens_per_second > 0:
            raise ValueError(f"cutoff_hz and tokens_per_second must be > 0, got {cutoff_hz} and {tokens_per_second}")
        return max(1, math.ceil(cutoff_hz * n / tokens_per_second)), num_bins
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep (the fraction of the spectrum kept) must lie in (0, 1], got {keep}")
    return max(1, math.ceil(keep * num_bins)), num_bins


def spectral_smooth(
    scores: Tensor,
    *,
    alpha: float = 0.8,
    keep: float = 0.1,
    cutoff_hz: float | None = None,
    tokens_per_second: float = 25.0,
    taper: float = 0.5,
    padding: str = "reflect",
    clamp: bool = True,
) -> Tensor:
    """Spectral Score Smoothing of token scores along the last dimension.

    Parameters
    ----------
    scores : Tensor
        `(..., L)` scores of `L` consecutive audio tokens (one row per head).
    alpha : float
        Blend in [0, 1]: `alpha * lowpass(x) + (1 - alpha) * x`; 0 is the identity, 1 a pure low-pass.
    keep : float
        Fraction of the rFFT bins in the pass band (`cutoff_bins`), in (0, 1]; 1 keeps every bin (identity).
    cutoff_hz, tokens_per_second : float
        A physical cutoff instead of `keep` (tokens per second of the model's audio tokens: 25 for Qwen2-Audio
        and Qwen2.5-Omni, 50 for Whisper's encoder states).
    taper : float
        Width of the Gaussian roll-off after the pass band, as a fraction of the cutoff (0: hard cut).
    padding : {"reflect", "mean", "none"}
        `"reflect"` (default) mirrors the signal to length `2L` before the FFT: no wrap-around between the ends.
        `"mean"` only removes the per-row mean first (the ends still leak into each other); `"none"` filters the
        raw periodic signal (for comparison).
    clamp : bool
        Clamp the result at >= 0 (attention scores are non-negative). Default True.

    Returns
    -------
    Tensor
        Same shape as `scores`, float32. The row mean is preserved (bin 0 has gain 1).
    """
    if not isinstance(scores, Tensor) or scores.ndim < 1 or not scores.is_floating_point():
        raise ValueError("scores must be a floating-point tensor of shape (..., length)")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    x = scores.float()
    length = x.shape[-1]
    if alpha == 0 or length < 2:
        return x.clamp_min(0.0) if clamp else x.clone()
    cutoff, num_bins = cutoff_bins(
        length, keep=keep, cutoff_hz=cutoff_hz, tokens_per_second=tokens_per_second, padding=padding
    )
    if padding == "reflect":
        signal = torch.cat([x, x.flip(-1)], dim=-1)  # (..., 2L): even extension, continuous at both ends
        mean = None
    elif padding == "mean":
        mean = x.mean(-1, keepdim=True)
        signal = x - mean
    else:
        signal, mean = x, None
    n = signal.shape[-1]
    spectrum = torch.fft.rfft(signal, dim=-1)  # (..., n // 2 + 1)
    gain = lowpass_mask(num_bins, cutoff, taper, device=x.device)
    low = torch.fft.irfft(spectrum * gain, n=n, dim=-1)[..., :length]
    if mean is not None:
        low = low + mean
    out = alpha * low + (1.0 - alpha) * x
    return out.clamp_min(0.0) if clamp else out


def headkv_capacities(
    importance: Tensor,
    base: int,
    *,
    beta: float = 2.0,
    temperature: float = 1.0,
    upper: int | Tensor | None = None,
) -> Tensor:
    """Per-head budgets of one layer moved toward important heads (HeadKV's allocation, one layer at a time).

    With `G` heads of average budget `b = base`, each head keeps a floor `f = b - floor(b / beta)` and the pool
    `P = G * floor(b / beta)` is shared in proportion to `importance ** temperature`::

        budget[k] = f + P * s[k]**T / sum_j s[j]**T

    rounded by largest remainders so that the budgets sum to exactly `G * b`, then capped at `upper` (the
    evictable tokens of each head); what a capped head cannot use goes to the others. Heads with all-zero
    importance share the pool equally.

    Parameters
    ----------
    importance : Tensor
        `(G,)` non-negative head scores (an audio-head profile's row).
    base : int
        Average budget per head (>= 0).
    beta : float
        > 1. How much is redistributed: near 1 pools almost everything, large values give near-uniform budgets.
    temperature : float
        >= 1 sharpens the shares (HeadKV's `temp`).
    upper : int or Tensor, optional
        Per-head maximum (`(G,)` or one int).

    Returns
    -------
    Tensor
        `(G,)` long budgets; with `upper` each lies in `[min(1, upper), upper]` when `base >= 1`.
    """
    importance = torch.as_tensor(importance).detach().float().cpu()
    if importance.dim() != 1 or importance.numel() == 0:
        raise ValueError(f"importance must be a (heads,) tensor, got shape {tuple(importance.shape)}")
    if not bool(torch.isfinite(importance).all()) or bool((importance < 0).any()):
        raise ValueError("importance must be finite and non-negative")
    if isinstance(base, bool) or not isinstance(base, int) or base < 0:
        raise ValueError(f"base must be an int >= 0, got {base!r}")
    if not float(beta) > 1.0:
        raise ValueError(f"beta must be > 1, got {beta}")
    if not float(temperature) >= 1.0:
        raise ValueError(f"temperature must be >= 1, got {temperature}")
    heads = importance.numel()
    pooled_each = math.floor(Fraction(base) / Fraction(repr(float(beta))))
    floor = base - pooled_each
    pool = heads * pooled_each
    weights = [Fraction(v) for v in (importance.double() ** float(temperature)).tolist()]
    mass = sum(weights)
    shares = [w / mass if mass > 0 else Fraction(1, heads) for w in weights]
    ideal = [floor + pool * s for s in shares]
    if upper is None:
        caps = None
    else:
        caps_t = torch.as_tensor(upper).reshape(-1).long().cpu()
        caps = [int(caps_t[0])] * heads if caps_t.numel() == 1 else caps_t.tolist()
        if len(caps) != heads:
            raise ValueError(f"upper has {len(caps)} entries for {heads} heads")
    return torch.tensor(apportion(ideal, heads * base, caps), dtype=torch.long)


def even_positions(allowed: Tensor, counts: Tensor) -> Tensor:
    """Mark `counts` evenly spaced positions among the `True` positions of `allowed`, per row.

    `allowed` `(..., N)` bool (for example one row's audio positions) and `counts` `(...)` int (broadcast against
    `allowed`'s leading dims). Among the `L` allowed positions of a row, those of rank `floor((j + 1/2) L / m)`
    (0-based, in order) for `j < m = min(count, L)` are marked: one per stride of `L / m`, at its centre.
    Vectorised (no per-row loop).

    Returns a bool tensor of the broadcast shape `(..., N)`.
    """
    allowed = torch.as_tensor(allowed)
    if allowed.dtype != torch.bool or allowed.dim() < 1:
        raise ValueError("allowed must be a bool tensor of shape (..., N)")
    counts = torch.as_tensor(counts, device=allowed.device).long()
    if bool((counts < 0).any()):
        raise ValueError("counts must be >= 0")
    length = allowed.sum(-1, keepdim=True)  # (..., 1)
    m = torch.minimum(counts.unsqueeze(-1), length)
    rank = allowed.long().cumsum(-1) - 1  # rank of each allowed position
    two_l = (2 * length).clamp_min(1)
    # rank r is marked when some j has r <= (j + 1/2) L / m < r + 1:
    # ceil(((2r + 2) m - L) / 2L) > ceil((2r m - L) / 2L)
    after = -torch.div(length - (2 * rank + 2) * m, two_l, rounding_mode="floor")
    before = -torch.div(length - 2 * rank * m, two_l, rounding_mode="floor")
    return allowed & (after > before)
