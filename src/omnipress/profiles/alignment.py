"""ASR-alignment head scores: how well each head's attention over the audio follows the words being emitted.

Pure tensor functions over the attention of the transcript's queries on the audio tokens, one utterance at a time:
`attention` `(layers, heads, T, N_a)` holds, for each of the `T` transcript tokens, the head's attention
probabilities on the `N_a` audio positions (normalised over *all* keys, then sliced to the audio), so a row sums to
the head's audio mass share at that step.

- `monotonicity_scores` (default, no timestamps needed): Spearman correlation between the step and the audio
  position the head looks at most (clamped at 0), times the head's mean audio mass share. ASR alignment is a
  diagonal: a head that tracks the words moves forward through the audio as the transcript advances.
- `timestamp_scores` (word timestamps given): `"hit"` = share of steps whose attention peak lies inside the token's
  word interval (widened by a tolerance); `"mass"` = mean share of the audio attention that falls inside it, times
  the audio mass share.

AudioKV (arXiv 2604.06694) finds its audio-critical heads by such an alignment analysis on ASR; the exact scores
are our reconstruction (docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

SCORES = ("monotonicity", "hit", "mass")


def _check_attention(attention: Tensor) -> Tensor:
    if not isinstance(attention, Tensor) or attention.dim() != 4 or not attention.is_floating_point():
        raise ValueError("attention must be a float tensor (layers, heads, steps, audio positions)")
    if attention.shape[2] == 0 or attention.shape[3] == 0:
        raise ValueError(f"attention needs at least one step and one audio position, got {tuple(attention.shape)}")
    return attention.float()


def average_ranks(x: Tensor) -> Tensor:
    """Ranks `0..n-1` along the last dimension, ties sharing their average rank (Spearman's convention)."""
    n = x.shape[-1]
    order = x.argsort(dim=-1, stable=True)
    sorted_x = x.gather(-1, order)
    ordinal = torch.arange(n, dtype=torch.float64, device=x.device).expand_as(x).contiguous()
    # start index of each tie group, broadcast over the group, then the group's mean ordinal
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[..., 1:] = sorted_x[..., 1:] != sorted_x[..., :-1]
    group_id = new_group.long().cumsum(-1) - 1  # (..., n)
    sums = torch.zeros_like(ordinal).scatter_add_(-1, group_id, ordinal)
    counts = torch.zeros_like(ordinal).scatter_add_(-1, group_id, torch.ones_like(ordinal))
    mean_rank = (sums / counts.clamp_min(1)).gather(-1, group_id)
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman rank correlation of `x` and `y` along the last dimension (0 where either is constant)."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    rx, ry = average_ranks(x.double()), average_ranks(y.double())
    rx = rx - rx.mean(-1, keepdim=True)
    ry = ry - ry.mean(-1, keepdim=True)
    denom = (rx.square().sum(-1) * ry.square().sum(-1)).sqrt()
    rho = (rx * ry).sum(-1) / denom.clamp_min(1e-30)
    return torch.where(denom > 0, rho, torch.zeros_like(rho)).float()


def monotonicity_scores(attention: Tensor) -> Tensor:
    """Timestamp-free alignment score per head, `(layers, heads)`, in [0, 1].

    `max(0, spearman(step, argmax_j attention[..., step, j])) * mean_step(sum_j attention[..., step, j])`.
    """
    attention = _check_attention(attention)
    steps = attention.shape[2]
    peak = attention.argmax(-1).double()  # (L, H, T)
    step = torch.arange(steps, dtype=torch.float64).expand_as(peak)
    rho = spearman(step, peak).clamp_min(0.0)
    return rho * attention.sum(-1).mean(-1)


def token_windows(
    intervals: Sequence[tuple[float, float]] | Tensor,
    num_positions: int,
    tokens_per_second: float,
    tolerance: float = 0.15,
) -> Tensor:
    """`(T, N_a)` bool: audio position `j` (time `j / tokens_per_second`) lies in token `i`'s word interval
    `[start - tolerance, end + tolerance]` seconds (a sub-word token carries its word's interval)."""
    times = torch.as_tensor(intervals, dtype=torch.float64).reshape(-1, 2)
    if bool((times[:, 1] < times[:, 0]).any()):
        raise ValueError("each word interval needs start <= end")
    if not tokens_per_second > 0 or tolerance < 0:
        raise ValueError(f"need tokens_per_second > 0 and tolerance >= 0, got {tokens_per_second}, {tolerance}")
    t = torch.arange(num_positions, dtype=torch.float64) / tokens_per_second
    return (t.unsqueeze(0) >= times[:, :1] - tolerance) & (t.unsqueeze(0) <= times[:, 1:] + tolerance)


def timestamp_scores(attention: Tensor, windows: Tensor, score: str = "hit") -> Tensor:
    """Alignment score per head with word timestamps, `(layers, heads)`.

    Parameters
    ----------
    attention : Tensor
        `(layers, heads, T, N_a)` attention of the transcript tokens on the audio.
    windows : Tensor
        `(T, N_a)` bool, `token_windows`: where each token's word is spoken. Steps whose window is empty (words
        outside the audio, punctuation given an empty interval) are skipped.
    score : {"hit", "mass"}
        `"hit"`: share of steps whose audio attention peak lies in the window. `"mass"`: mean over steps of the
        in-window share of the audio attention, times the mean audio mass share.
    """
    attention = _check_attention(attention)
    windows = torch.as_tensor(windows, dtype=torch.bool)
    if tuple(windows.shape) != tuple(attention.shape[2:]):
        raise ValueError(f"windows must be (T, N_a) = {tuple(attention.shape[2:])}, got {tuple(windows.shape)}")
    if score not in ("hit", "mass"):
        raise ValueError(f"score must be 'hit' or 'mass', got {score!r}")
    used = windows.any(-1)  # (T,)
    if not bool(used.any()):
        raise ValueError("no transcript token has a word interval inside the audio")
    attention, windows = attention[:, :, used], windows[used]
    if score == "hit":
        peak = attention.argmax(-1)  # (L, H, T')
        hits = windows[torch.arange(peak.shape[-1]).expand_as(peak), peak]  # (L, H, T'): peak in its window
        return hits.float().mean(-1)
    audio_mass = attention.sum(-1)  # (L, H, T')
    inside = (attention * windows.float()).sum(-1) / audio_mass.clamp_min(1e-12)
    return inside.mean(-1) * audio_mass.mean(-1)


def words_to_tokens(word_intervals: Sequence[tuple[float, float]], token_words: Sequence[int]) -> list[tuple]:
    """Per-token intervals from per-word intervals: token `i` belongs to word `token_words[i]` (`-1`: no word,
    e.g. punctuation, gets an empty interval that `timestamp_scores` skips)."""
    out: list[tuple[float, float]] = []
    for w in token_words:
        if w < 0:
            out.append((math.inf, math.inf))
        elif w >= len(word_intervals):
            raise ValueError(f"token word index {w} but only {len(word_intervals)} word intervals")
        else:
            out.append(tuple(word_intervals[w]))  # type: ignore[arg-type]
    return out
