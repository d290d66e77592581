"""The math of in-LLM audio token pruning, as pure tensor functions.

Every function works on a left-padded batch: `candidates` `(batch, seq)` marks the prunable (audio) columns of each
row, `valid` `(batch, seq)` its real (non-padding) columns. Tested against brute-force references in
`tests/tokens/inllm/test_scoring.py`.
"""

from __future__ import annotations

import math

import torch


def retained_counts(candidates: torch.Tensor, retain: float) -> torch.Tensor:
    """`(batch,)` long: `ceil(retain * n_b)` kept of the `n_b` candidates of each row (rounded to 6 decimals first,
    so that `0.7 * 10` keeps 7, not 8)."""
    counts = candidates.sum(dim=-1).double()  # (batch,)
    return torch.ceil(torch.round(counts * retain, decimals=6)).long()


def top_fraction(scores: torch.Tensor, candidates: torch.Tensor, retain: float) -> torch.Tensor:
    """Keep the best-scored `ceil(retain * n_b)` candidates of every row.

    Parameters
    ----------
    scores : Tensor
        `(batch, seq)`; only the candidate entries are read. Ties go to the earlier column.
    candidates : Tensor
        `(batch, seq)` bool.
    retain : float
        Share of each row's candidates kept, in (0, 1].

    Returns
    -------
    Tensor
        `(batch, seq)` bool, a subset of `candidates`.
    """
    k = retained_counts(candidates, retain).to(scores.device)  # (batch,)
    masked = scores.float().masked_fill(~candidates, float("-inf"))
    order = masked.argsort(dim=-1, descending=True, stable=True)  # (batch, seq)
    rank_kept = torch.arange(scores.shape[-1], device=scores.device).unsqueeze(0) < k.unsqueeze(-1)
    keep = torch.zeros_like(candidates)
    keep.scatter_(1, order, rank_kept)
    return keep & candidates


def top_fraction_by_segment(
    scores: torch.Tensor, candidates: torch.Tensor, retain: float, segments: int
) -> torch.Tensor:
    """Segment-wise ranking (HeadRouter spec §2.2 step 3d, the temporal-coverage idea of segment-wise pruning):
    split each row's candidates, in order, into `segments` runs of equal length and keep the best-scored tokens of
    every run, in proportion to its length.

    Segment `s` of a row with `n` candidates holds the candidates of rank `r` with `floor(segments * r / n) = s` and
    keeps `floor(k * e_s / n) - floor(k * b_s / n)` of them (`[b_s, e_s)` its rank range, `k = ceil(retain * n)`):
    the quotas sum to `k` exactly. With `segments=1` this is `top_fraction`. Ties go to the earlier column.

    Returns `(batch, seq)` bool, a subset of `candidates`.
    """
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments must be an int >= 1, got {segments!r}")
    k = retained_counts(candidates, retain).to(scores.device).unsqueeze(-1)  # (batch, 1)
    n = candidates.sum(dim=-1, keepdim=True)  # (batch, 1)
    rank = (candidates.long().cumsum(dim=-1) - 1).clamp(min=0)  # rank among the row's candidates
    seg = torch.div(rank * segments, n.clamp(min=1), rounding_mode="floor").masked_fill(~candidates, segments)
    # rank range [begin, end) of every column's segment, and its quota
    index = torch.arange(segments + 1, device=scores.device)
    bounds = torch.div(index * n + segments - 1, segments, rounding_mode="floor")  # first rank of each segment
    begin, end = bounds.gather(1, seg.clamp(max=segments - 1)), bounds.gather(1, seg.clamp(max=segments - 1) + 1)
    quota = torch.div(k * end, n.clamp(min=1), rounding_mode="floor") - torch.div(
        k * begin, n.clamp(min=1), rounding_mode="floor"
    )
    # order by segment, then by score (descending), then by column
    masked = scores.float().masked_fill(~candidates, float("-inf"))
    order = masked.argsort(dim=-1, descending=True, stable=True)
    order = order.gather(1, seg.gather(1, order).argsort(dim=-1, stable=True))
    place = torch.empty_like(order)
    place.scatter_(1, order, torch.arange(order.shape[-1], device=scores.device).expand_as(order))
    starts = (seg.unsqueeze(-1) < index[:-1].view(1, 1, -1)).sum(dim=1)  # (batch, segments): columns before s
    first = starts.gather(1, seg.clamp(max=segments - 1))
    return candidates & (place - first < quota)


def frame_keep(candidates: torch.Tensor, retain: float) -> torch.Tensor:
    """Uniform temporal subsampling ("Frame", AudioMarathon): of the `n` candidates of a row keep the ones at
    ranks `floor(i * n / k)`, `i = 0 .. k-1`, with `k = ceil(retain * n)`. Returns `(batch, seq)` bool."""
    k = retained_counts(candidates, retain)  # (batch,)
    n = candidates.sum(dim=-1)  # (batch,)
    rank = candidates.long().cumsum(dim=-1) - 1  # (batch, seq): rank of each candidate within its row
    # rank r is picked iff r == floor(i * n / k) for some i, i.e. iff ceil(r * k / n) * n // k == r
    kk, nn_ = k.unsqueeze(-1), n.clamp(min=1).unsqueeze(-1)
    i = torch.div(rank * kk + nn_ - 1, nn_, rounding_mode="floor")  # ceil(r * k / n)
    picked = (i < kk) & (torch.div(i * nn_, kk.clamp(min=1), rounding_mode="floor") == rank)
    return picked & candidates


def probe_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scaling: float,
    query_rows: torch.Tensor,
    key_valid: torch.Tensor,
    causal: bool = True,
) -> torch.Tensor:
    """Attention of a set of query tokens over every key, averaged over those queries, per head.

    Parameters
    ----------
    query : Tensor
        `(batch, heads, q, dim)` post-RoPE queries of the last `q` columns (decoder-only: the prompt's tail; Whisper
        cross-attention: the decoder tokens).
    key : Tensor
        `(batch, kv_heads, seq, dim)` post-RoPE keys; query heads share their group's key head (GQA).
    scaling : float
        The softmax scale the model uses (`module.scaling`; 1.0 for Whisper, whose queries are pre-scaled).
    query_rows : Tensor
        `(batch, q)` bool: the queries averaged per row (at least one per row).
    key_valid : Tensor
        `(batch, seq)` bool: real keys (padding False).
    causal : bool
        Query `i` of the tail sees the keys up to its own column `seq - q + i` (False for cross-attention).

    Returns
    -------
    Tensor
        `(batch, heads, seq)` float32: `mean over the chosen queries of softmax(q k^T * scaling)`, normalised over
        all keys (so a slice over the audio columns is that head's attention on audio).
    """
    heads, q_len = query.shape[1], query.shape[2]
    kv_heads, seq = key.shape[1], key.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not divide into {kv_heads} key heads")
    k = key.float().repeat_interleave(heads // kv_heads, dim=1)  # (B, H, N, d)
    logits = torch.matmul(query.float(), k.transpose(-1, -2)) * scaling  # (B, H, q, N)
    visible = key_valid.to(query.device)[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        rows = torch.arange(q_len, device=query.device).unsqueeze(1) + (seq - q_len)
        visible = visible & (torch.arange(seq, device=query.device).unsqueeze(0) <= rows)[None, None]
    weights = logits.masked_fill(~visible, float("-inf")).softmax(dim=-1).nan_to_num(0.0)  # (B, H, q, N)
    rows_f = query_rows.to(query.device).float()  # (B, q)
    total = (weights * rows_f[:, None, :, None]).sum(dim=2)  # (B, H, N)
    return total / rows_f.sum(dim=-1).clamp(min=1.0)[:, None, None]


def tail_query_rows(candidates: torch.Tensor, valid: torch.Tensor, q_len: int, mode: str) -> torch.Tensor:
    """`(batch, q_len)` bool: which of the last `q_len` columns form the text query set.

    `mode="last"`: the last token (AudioMarathon's FastV port). `mode="text"`: every real column after the row's
    last audio candidate (the question and the assistant header); the last token when a row has none.
    """
    bsz, seq = candidates.shape
    columns = torch.arange(seq, device=candidates.device).unsqueeze(0)  # (1, N)
    last_audio = torch.where(candidates, columns, -1).amax(dim=-1, keepdim=True)  # (B, 1)
    if mode == "last":
        rows = columns == seq - 1
    elif mode == "text":
        rows = (columns > last_audio) & valid
        rows = rows | ((columns == seq - 1) & ~rows.any(dim=-1, keepdim=True))
    else:
        raise ValueError(f"query must be 'last' or 'text', got {mode!r}")
    return rows.expand(bsz, seq)[:, seq - q_len :]


def dart_scores(features: torch.Tensor, candidates: torch.Tensor, pivots: int) -> torch.Tensor:
    """DART's duplication-aware scores (arXiv 2502.11494): the `pivots` candidates of largest L2 norm are pivots;
    every other candidate scores minus its highest cosine similarity to a pivot (the least duplicated rank first),
    pivots score +inf (always kept first).

    Parameters
    ----------
    features : Tensor
        `(batch, seq, dim)` token features (the hidden states entering layer K).
    candidates : Tensor
        `(batch, seq)` bool.
    pivots : int
        Pivot tokens per row (fewer when a row has fewer candidates).

    Returns
    -------
    Tensor
        `(batch, seq)` float32 scores (non-candidates -inf).
    """
    x = features.float()
    norms = x.norm(dim=-1).masked_fill(~candidates, float("-inf"))  # (B, N)
    p = max(1, min(int(pivots), x.shape[1]))
    top = norms.topk(p, dim=-1)  # (B, p)
    pivot_ok = torch.isfinite(top.values)  # rows with fewer candidates than pivots
    unit = torch.nn.functional.normalize(x, dim=-1)  # (B, N, D)
    pivot_vec = unit.gather(1, top.indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, p, D)
    sim = torch.matmul(unit, pivot_vec.transpose(1, 2))  # (B, N, p)
    sim = sim.masked_fill(~pivot_ok.unsqueeze(1), float("-inf"))
    scores = -sim.amax(dim=-1)  # (B, N)
    is_pivot = torch.zeros_like(candidates)
    is_pivot.scatter_(1, top.indices, pivot_ok)
    scores = scores.masked_fill(is_pivot, float("inf"))
    return scores.masked_fill(~candidates, float("-inf"))


def check_retain(retain: float) -> float:
    """`retain` as a float in (0, 1], else a `ValueError`."""
    if isinstance(retain, bool) or not isinstance(retain, (int, float)) or not math.isfinite(retain):
        raise ValueError(f"retain must be a number in (0, 1], got {retain!r}")
    if not 0.0 < float(retain) <= 1.0:
        raise ValueError(f"retain must be in (0, 1] (the share of audio tokens kept), got {retain}")
    return float(retain)
