"""Pure scoring functions for KV-cache compression (higher score = keep).

Every function here is a pure function on tensors: it never modifies its inputs and has no state. All key, query
and value tensors are **post-RoPE**. Shape names used throughout:

- ``B``: batch, ``Hq``: query heads, ``Hkv``: KV heads (GQA group ``g = Hq // Hkv``, transformers' ``repeat_kv``
  layout: query head ``h`` reads KV head ``h // g``), ``N``: cached sequence length, ``W``: observation window
  (the last ``W`` tokens, always kept by the hosts), ``L = N - W``: selectable prefix, ``D``: head dim.

Softmax is always computed in float32 and every score is returned in float32.

References: SnapKV (arXiv 2404.14469), H2O (arXiv 2306.14048), StreamingLLM (arXiv 2309.17453), KNorm
(arXiv 2406.11430), KeyDiff (arXiv 2504.15364), MixKV (arXiv 2510.20707).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "h2o_scores",
    "hashed_uniform",
    "key_diversity",
    "knorm_scores",
    "minmax",
    "mixkv_scores",
    "pool1d",
    "random_scores",
    "reduce_gqa",
    "redundancy_weight",
    "snapkv_scores",
    "streaming_llm_scores",
    "unit_mean_key",
    "value_norms",
    "window_attention",
]

_GQA_REDUCTIONS = ("mean", "max")
_POOLINGS = ("avg", "max")


# ---------------------------------------------------------------------------------------------------------------
# input checks


def _check_tensor(name: str, x: object, ndim: int, *, floating: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_queries_keys(queries: Tensor, keys: Tensor) -> tuple[int, int]:
    """Validate (B, Hq, Q, D) queries against (B, Hkv, N, D) keys; return (group size g, N)."""
    _check_tensor("queries", queries, 4)
    _check_tensor("keys", keys, 4)
    bq, hq, nq, dq = queries.shape
    bk, hkv, n, dk = keys.shape
    if bq != bk:
        raise ValueError(f"queries and keys must share the batch size, got {bq} and {bk}")
    if dq != dk:
        raise ValueError(f"queries and keys must share the head dim, got {dq} and {dk}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    if nq > n:
        raise ValueError(f"more queries ({nq}) than keys ({n}): the queries must be the last tokens of the keys")
    return hq // hkv, n


def _check_scaling(scaling: float) -> float:
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or not math.isfinite(scaling):
        raise TypeError(f"scaling must be a finite number, got {scaling!r}")
    if scaling <= 0:
        raise ValueError(f"scaling must be > 0 (usually head_dim ** -0.5), got {scaling}")
    return float(scaling)


def _check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


# ---------------------------------------------------------------------------------------------------------------
# attention-based scores


def _check_key_mask(key_mask: Tensor | None, keys: Tensor) -> Tensor | None:
    """Validate a ``(B, 1 or Hkv, N)`` bool mask of the real (non-padding) keys; ``None`` means all are real."""
    if key_mask is None:
        return None
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
        raise TypeError("key_mask must be a bool tensor (True = a real entry, False = padding)")
    batch, kv_heads, n = keys.shape[:3]
    if key_mask.ndim != 3 or key_mask.shape[0] != batch or key_mask.shape[1] not in (1, kv_heads):
        raise ValueError(f"key_mask must have shape ({batch}, 1 or {kv_heads}, {n}), got {tuple(key_mask.shape)}")
    if key_mask.shape[2] != n:
        raise ValueError(f"key_mask covers {key_mask.shape[2]} entries but there are N = {n} keys")
    return key_mask.to(keys.device)


def _grouped_causal_attention(
    queries: Tensor, keys: Tensor, scaling: float, first_position: int, key_mask: Tensor | None = None
) -> Tensor:
    """Softmax attention of queries sitting at ``first_position + j`` over causal keys, fp32, (B, Hq, Q, N).

    Keys outside ``key_mask`` (padding) get zero weight; a query that sees no real key (a padding query) gets an
    all-zero row.
    """
    batch, q_heads, q_len, head_dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    group = q_heads // kv_heads
    # Grouping the queries by KV head is equivalent to repeat_kv on the keys, without copying the keys g times.
    grouped = queries.float().reshape(batch, kv_heads, group * q_len, head_dim)  # (B, Hkv, g*Q, D)
    logits = torch.matmul(grouped, keys.float().transpose(-1, -2)) * scaling  # (B, Hkv, g*Q, N)
    query_pos = torch.arange(first_position, first_position + q_len, device=keys.device)
    key_pos = torch.arange(n, device=keys.device)
    hidden = (key_pos[None, :] > query_pos[:, None]).repeat(group, 1)  # (g*Q, N) future keys
    if key_mask is not None:
        hidden = hidden | ~key_mask.unsqueeze(2)  # (B, Hkv or 1, g*Q, N)
    logits = logits.masked_fill(hidden, float("-inf"))
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    if key_mask is not None:
        probs = torch.nan_to_num(probs, nan=0.0)  # rows without any visible real key
    return probs.view(batch, q_heads, q_len, n)


def window_attention(queries: Tensor, keys: Tensor, *, scaling: float, key_mask: Tensor | None = None) -> Tensor:
    """Causal softmax attention of the last ``W`` queries over all ``N`` keys (SnapKV's observation window).

    Window query ``j`` sits at position ``N - W + j`` and sees the keys at positions ``<= N - W + j``.
    GQA is handled as ``repeat_kv`` does: query head ``h`` attends to KV head ``h // g``.

    Parameters
    ----------
    queries : Tensor
        ``(B, Hq, W, D)`` post-RoPE queries of the last ``W`` tokens.
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys, ``N >= W``.
    scaling : float
        Logit scale, usually ``D ** -0.5``.
    key_mask : Tensor, optional
        ``(B, 1 or Hkv, N)`` bool, ``False`` for padding entries (left padding of a batch, or the unused slots of a
        ragged cache laid out right-aligned); they get zero weight. ``None``: every key is real.

    Returns
    -------
    Tensor
        ``(B, Hq, W, N)`` float32 attention probabilities (each row sums to 1, masked keys are exactly 0; a padding
        query, which sees no real key, gets an all-zero row).

    References
    ----------
    SnapKV, arXiv 2404.14469.
    """
    _check_queries_keys(queries, keys)
    scaling = _check_scaling(scaling)
    key_mask = _check_key_mask(key_mask, keys)
    window, n = queries.shape[2], keys.shape[2]
    return _grouped_causal_attention(queries, keys, scaling, first_position=n - window, key_mask=key_mask)


def reduce_gqa(scores: Tensor, num_kv_heads: int, how: str = "mean") -> Tensor:
    """Reduce per-query-head scores to per-KV-head scores.

    Query heads ``[j*g, (j+1)*g)`` form the group of KV head ``j`` (transformers' ``repeat_kv`` layout).

    Parameters
    ----------
    scores : Tensor
        ``(B, Hq, ...)`` scores.
    num_kv_heads : int
        ``Hkv``; must divide ``Hq``.
    how : {"mean", "max"}
        Reduction over the ``g`` query heads of each group.

    Returns
    -------
    Tensor
        ``(B, Hkv, ...)``.
    """
    if not isinstance(scores, Tensor) or scores.ndim < 2:
        raise ValueError("scores must be a tensor of shape (batch, query_heads, ...)")
    if how not in _GQA_REDUCTIONS:
        raise ValueError(f"how must be one of {_GQA_REDUCTIONS}, got {how!r}")
    q_heads = scores.shape[1]
    if isinstance(num_kv_heads, bool) or not isinstance(num_kv_heads, int) or num_kv_heads < 1:
        raise ValueError(f"num_kv_heads must be a positive int, got {num_kv_heads!r}")
    if q_heads % num_kv_heads != 0:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    grouped = scores.reshape(scores.shape[0], num_kv_heads, q_heads // num_kv_heads, *scores.shape[2:])
    return grouped.mean(dim=2) if how == "mean" else grouped.amax(dim=2)


def pool1d(scores: Tensor, kernel: int, how: str = "avg") -> Tensor:
    """Smooth scores along the last dimension (stride 1, padding ``kernel // 2``, same length out).

    ``"avg"`` counts the zero padding in the average (``count_include_pad=True``), so the first and last
    ``kernel // 2`` positions are damped, exactly as SnapKV's reference code. ``"max"`` ignores the padding.

    Parameters
    ----------
    scores : Tensor
        ``(..., L)`` scores, typically ``(B, H, L)``.
    kernel : int
        Odd window size ``>= 1``; ``1`` is the identity.
    how : {"avg", "max"}
        Pooling type.

    Returns
    -------
    Tensor
        Same shape and dtype as ``scores``.
    """
    if not isinstance(scores, Tensor) or scores.ndim < 1:
        raise ValueError("scores must be a tensor with at least one dimension")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd int >= 1 (the output keeps the input length), got {kernel!r}")
    if how not in _POOLINGS:
        raise ValueError(f"how must be one of {_POOLINGS}, got {how!r}")
    length = scores.shape[-1]
    if kernel == 1 or length == 0 or scores.numel() == 0:
        return scores.clone()
    flat = scores.reshape(-1, 1, length)  # (rows, 1, L)
    if how == "avg":
        pooled = F.avg_pool1d(flat, kernel_size=kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    else:
        pooled = F.max_pool1d(flat, kernel_size=kernel, stride=1, padding=kernel // 2)
    return pooled.reshape(scores.shape)


def snapkv_scores(
    queries: Tensor,
    keys: Tensor,
    *,
    scaling: float,
    kernel: int = 5,
    pooling: str = "avg",
    gqa: str = "mean",
    key_mask: Tensor | None = None,
) -> Tensor:
    """SnapKV importance of the selectable prefix.

    Window attention of the last ``W`` queries, averaged over the ``W`` window queries, restricted to the
    columns ``[0, L)`` with ``L = N - W``, reduced over each GQA group, then pooled along the sequence.

    Parameters
    ----------
    queries : Tensor
        ``(B, Hq, W, D)`` post-RoPE queries of the observation window (``W = queries.shape[2]``).
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys.
    scaling : float
        Logit scale, usually ``D ** -0.5``.
    kernel : int
        Odd pooling window (official MixKV/SnapKV setting: 5).
    pooling : {"avg", "max"}
        See :func:`pool1d`.
    gqa : {"mean", "max"}
        See :func:`reduce_gqa`.
    key_mask : Tensor, optional
        Real (non-padding) keys, see :func:`window_attention`. Padding scores 0 before pooling, exactly like the
        zero padding of the pooling itself, so a left-padded row scores as it would alone.

    Returns
    -------
    Tensor
        ``(B, Hkv, L)`` float32 non-negative scores.

    References
    ----------
    SnapKV, arXiv 2404.14469; MixKV, arXiv 2510.20707.
    """
    attention = window_attention(queries, keys, scaling=scaling, key_mask=key_mask)  # (B, Hq, W, N)
    selectable = keys.shape[2] - queries.shape[2]
    per_query_head = attention[..., :selectable].mean(dim=2)  # (B, Hq, L)
    per_kv_head = reduce_gqa(per_query_head, keys.shape[1], how=gqa)  # (B, Hkv, L)
    return pool1d(per_kv_head, kernel, how=pooling)


def h2o_scores(
    queries: Tensor,
    keys: Tensor,
    *,
    scaling: float,
    gqa: str = "mean",
    chunk: int = 1024,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Heavy-hitter (H2O) scores: total causal attention each key receives from the queries.

    The queries are the last ``Q`` tokens of the sequence (normally all of them, ``Q = N``, at prefill); query ``i``
    sits at position ``N - Q + i``. The attention is built ``chunk`` queries at a time, so memory stays
    ``O(Hq * chunk * N)``.

    Parameters
    ----------
    queries : Tensor
        ``(B, Hq, Q, D)`` post-RoPE queries, ``Q <= N``.
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys.
    scaling : float
        Logit scale, usually ``D ** -0.5``.
    gqa : {"mean", "max"}
        See :func:`reduce_gqa`.
    chunk : int
        Number of queries processed at once.
    key_mask : Tensor, optional
        Real (non-padding) keys, see :func:`window_attention`; padding keys receive nothing and padding queries
        give nothing.

    Returns
    -------
    Tensor
        ``(B, Hkv, N)`` float32 accumulated attention.

    References
    ----------
    H2O, arXiv 2306.14048.
    """
    _check_queries_keys(queries, keys)
    scaling = _check_scaling(scaling)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    key_mask = _check_key_mask(key_mask, keys)
    batch, q_heads, q_len, _ = queries.shape
    n = keys.shape[2]
    offset = n - q_len
    received = torch.zeros(batch, q_heads, n, dtype=torch.float32, device=keys.device)  # (B, Hq, N)
    for start in range(0, q_len, chunk):
        stop = min(start + chunk, q_len)
        visible = offset + stop  # the last query of the chunk sees keys [0, visible)
        probs = _grouped_causal_attention(
            queries[:, :, start:stop],
            keys[:, :, :visible],
            scaling,
            first_position=offset + start,
            key_mask=None if key_mask is None else key_mask[..., :visible],
        )  # (B, Hq, chunk, visible)
        received[..., :visible] += probs.sum(dim=2)
    return reduce_gqa(received, keys.shape[1], how=gqa)


# ---------------------------------------------------------------------------------------------------------------
# query-free scores


def knorm_scores(keys: Tensor) -> Tensor:
    """KNorm scores ``-||k||_2``: keys with a low L2 norm tend to receive high attention.

    Parameters
    ----------
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys.

    Returns
    -------
    Tensor
        ``(B, Hkv, N)`` float32.

    References
    ----------
    Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression", arXiv 2406.11430.
    """
    _check_tensor("keys", keys, 4)
    return -torch.linalg.vector_norm(keys.float(), dim=-1)


def streaming_llm_scores(n: int, sinks: int, *, device: torch.device | str | None = None) -> Tensor:
    """StreamingLLM scores: the ``sinks`` first positions rank highest, then the most recent ones.

    Position ``i >= sinks`` scores ``i`` (recency); sink ``i < sinks`` scores ``n + i`` (above every non-sink).
    ``sinks > n`` is allowed and makes every position a sink.

    Parameters
    ----------
    n : int
        Number of positions.
    sinks : int
        Number of attention-sink positions at the start.
    device : torch.device or str, optional
        Device of the output.

    Returns
    -------
    Tensor
        ``(n,)`` float32 scores; broadcast to ``(B, Hkv, n)`` as needed.

    References
    ----------
    StreamingLLM, arXiv 2309.17453.
    """
    for name, value in (("n", n), ("sinks", sinks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    positions = torch.arange(n, dtype=torch.float32, device=device)
    return torch.where(positions < sinks, positions + n, positions)


def random_scores(
    shape: Sequence[int] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform random scores in ``[0, 1)`` (the random-eviction baseline).

    Parameters
    ----------
    shape : sequence of int
        Output shape, e.g. ``(B, Hkv, L)``.
    generator : torch.Generator, optional
        Source of randomness, for reproducible runs; must live on ``device``.
    device : torch.device or str, optional
        Device of the output.

    Returns
    -------
    Tensor
        float32 tensor of the given shape.
    """
    shape = tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"shape must be a sequence of non-negative ints, got {shape!r}")
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


def hashed_uniform(index: Tensor, key: int) -> Tensor:
    """Deterministic pseudo-random numbers in ``[0, 1)``: a splitmix64-style hash of ``index`` (int) and ``key``.

    Unlike a generator draw, the value at an index does not depend on how many values are drawn, so a padded row
    of a batch, or a longer prompt, draws the same number for the same token as the prompt alone.

    Parameters
    ----------
    index : Tensor
        Integer tensor of any shape.
    key : int
        Stream selector (seed, layer, head, ... mixed by the caller).

    Returns
    -------
    Tensor
        float32, same shape as ``index``.
    """
    if not isinstance(index, Tensor) or index.is_floating_point() or index.is_complex():
        raise TypeError("index must be an integer tensor")
    z = index.to(torch.int64) * 2654435761 + (key * 40503 + 12345)
    for shift, mult in ((30, -4658895280553007687), (27, -7723592293110705685)):  # splitmix64 constants as int64
        z = (z ^ (z >> shift)) * mult
    z = z ^ (z >> 31)
    return ((z >> 10) & ((1 << 53) - 1)).double().div_(2.0**53).float()  # z >= 0 here: bits 10..62


def unit_mean_key(keys: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Mean of the L2-normalised keys over all ``N`` tokens (window included), not renormalised.

    Parameters
    ----------
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys, ``N >= 1``.
    key_mask : Tensor, optional
        ``(B, 1 or Hkv, N)`` bool: average over the real keys only (padding excluded).

    Returns
    -------
    Tensor
        ``(B, Hkv, D)`` float32 ``mu = (1/N) sum_j k_j / ||k_j||``; ``||mu|| <= 1``.
    """
    _check_tensor("keys", keys, 4)
    if keys.shape[2] == 0:
        raise ValueError("keys must hold at least one token")
    unit = F.normalize(keys.float(), dim=-1)
    key_mask = _check_key_mask(key_mask, keys)
    if key_mask is None:
        return unit.mean(dim=2)
    weights = key_mask.unsqueeze(-1).float()  # (B, Hkv or 1, N, 1)
    return (unit * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)


def key_diversity(keys: Tensor, n_valid: int, key_mask: Tensor | None = None) -> Tensor:
    """KeyDiff-style raw diversity ``-k_i/||k_i|| . mu`` of the first ``n_valid`` keys.

    ``mu`` is :func:`unit_mean_key` over **all** ``N`` tokens, window included (as the official MixKV code does).
    Since ``mu`` is not renormalised the value is ``-cos(k_i, mu) * ||mu||``: a key far from the head's mean
    direction scores high.

    Parameters
    ----------
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys.
    n_valid : int
        Number of leading tokens to score, ``0 <= n_valid <= N`` (``L = N - W`` for the hosts).
    key_mask : Tensor, optional
        ``(B, 1 or Hkv, N)`` bool: real keys; ``mu`` averages over them only (padding excluded).

    Returns
    -------
    Tensor
        ``(B, Hkv, n_valid)`` float32.

    References
    ----------
    KeyDiff, arXiv 2504.15364; MixKV, arXiv 2510.20707.
    """
    _check_tensor("keys", keys, 4)
    n = keys.shape[2]
    if isinstance(n_valid, bool) or not isinstance(n_valid, int) or not 0 <= n_valid <= n:
        raise ValueError(f"n_valid must be an int in [0, N={n}], got {n_valid!r}")
    mean_key = unit_mean_key(keys, key_mask)  # (B, Hkv, D)
    unit = F.normalize(keys[:, :, :n_valid].float(), dim=-1)  # (B, Hkv, n_valid, D)
    return -torch.matmul(unit, mean_key.unsqueeze(-1)).squeeze(-1)


def redundancy_weight(keys: Tensor, *, clamp: bool = True, key_mask: Tensor | None = None) -> Tensor:
    """Online per-head redundancy ``w_h``: mean pairwise cosine similarity of the head's keys (MixKV §2.2 step 4).

    Computed in closed form from the unit mean key: ``w = (N ||mu||^2 - 1) / (N - 1)``, which equals the mean of
    ``cos(k_i, k_j)`` over all ordered pairs ``i != j`` (exact for non-zero keys). ``N == 1`` gives ``1.0``.

    Parameters
    ----------
    keys : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys (all tokens, window included).
    clamp : bool
        The raw value lies in ``[-1/(N-1), 1]`` (up to rounding). By default it is clamped to ``[0, 1]`` so it can be
        used directly as the MixKV mixing weight; the official code uses the raw value, which differs only for heads
        whose keys are, on average, anti-correlated (never the case for real LLM keys). ``clamp=False`` returns the
        raw value.
    key_mask : Tensor, optional
        ``(B, 1 or Hkv, N)`` bool: the pairs are taken over the real keys only (padding excluded).

    Returns
    -------
    Tensor
        ``(B, Hkv)`` float32.

    References
    ----------
    MixKV, arXiv 2510.20707 (online weight of the GUI-grounding code).
    """
    mean_key = unit_mean_key(keys, key_mask)  # (B, Hkv, D)
    if key_mask is None:
        n = torch.full(mean_key.shape[:2], float(keys.shape[2]), device=keys.device)
    else:
        n = key_mask.to(keys.device).sum(dim=-1).float().expand(mean_key.shape[:2])  # (B, Hkv)
    pairs = (n * mean_key.square().sum(dim=-1) - 1.0) / (n - 1).clamp_min(1.0)  # (B, Hkv)
    weight = torch.where(n > 1, pairs, torch.ones_like(pairs))  # a single key is fully redundant with itself
    return weight.clamp(0.0, 1.0) if clamp else weight


def value_norms(values: Tensor) -> Tensor:
    """L2 norm of each value vector (MixKV's intrinsic importance, "VNorm").

    Parameters
    ----------
    values : Tensor
        ``(B, Hkv, N, D)``.

    Returns
    -------
    Tensor
        ``(B, Hkv, N)`` float32.
    """
    _check_tensor("values", values, 4)
    return torch.linalg.vector_norm(values.float(), dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# normalisation and the MixKV mix


def minmax(x: Tensor, dim: int = -1, eps: float = 0.0, mask: Tensor | None = None) -> Tensor:
    """Min-max normalise ``(x - min) / (max - min + eps)`` along ``dim``.

    Where the denominator is 0 (constant slice and ``eps == 0``) the result is 0 instead of NaN.

    Parameters
    ----------
    x : Tensor
        Input scores.
    dim : int
        Dimension to normalise along.
    eps : float
        Non-negative constant added to the range.
    mask : Tensor, optional
        Bool tensor broadcastable to ``x``; ``True`` entries take part in the min/max, the others are returned as 0.
        A slice without any ``True`` entry is all zeros.

    Returns
    -------
    Tensor
        Same shape as ``x`` (floating point).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if not x.is_floating_point():
        x = x.float()
    if mask is None:
        low = x.amin(dim=dim, keepdim=True)
        high = x.amax(dim=dim, keepdim=True)
        span = high - low + eps
        valid = span > 0
        scaled = (x - low) / torch.where(valid, span, torch.ones_like(span))
        return torch.where(valid, scaled, torch.zeros_like(scaled))
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool tensor (True = takes part)")
    try:
        mask = torch.broadcast_to(mask, x.shape)
    except RuntimeError as error:
        message = f"mask of shape {tuple(mask.shape)} does not broadcast to x of shape {tuple(x.shape)}"
        raise ValueError(message) from error
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    low = torch.where(mask, x, inf).amin(dim=dim, keepdim=True)
    high = torch.where(mask, x, -inf).amax(dim=dim, keepdim=True)
    span = high - low + eps  # -inf for a slice without any masked entry
    valid = span > 0
    scaled = (x - low) / torch.where(valid, span, torch.ones_like(span))
    return torch.where(mask & valid, scaled, torch.zeros_like(scaled))


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the ``True`` entries of ``mask`` along the last dim, keepdim."""
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim=-1, keepdim=True)
    count = mask.sum(dim=-1, keepdim=True).clamp_min(1)
    return total / count


def _head_weight(weight: float | Tensor, batch: int, heads: int, device: torch.device) -> Tensor:
    """Validate the MixKV weight and expand it to (B, Hkv, 1) float32."""
    if isinstance(weight, Tensor):
        w = weight.detach().to(device=device, dtype=torch.float32)
        if w.ndim == 0:
            w = w.expand(batch, heads)
        elif w.ndim == 1 and w.shape[0] == heads:
            w = w.unsqueeze(0).expand(batch, heads)
        elif w.ndim == 2 and w.shape[1] == heads and w.shape[0] in (1, batch):
            w = w.expand(batch, heads)
        else:
            raise ValueError(
                f"weight tensor must have shape (), ({heads},) or ({batch}, {heads}), got {tuple(weight.shape)}"
            )
    elif isinstance(weight, (int, float)) and not isinstance(weight, bool):
        w = torch.full((batch, heads), float(weight), dtype=torch.float32, device=device)
    else:
        raise TypeError(f"weight must be a float or a tensor, got {type(weight).__name__}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or bool((w > 1).any()):
        raise ValueError(f"weight must lie in [0, 1], got values in [{w.min().item()}, {w.max().item()}]")
    return w.unsqueeze(-1)  # (B, Hkv, 1)


def mixkv_scores(
    attention: Tensor,
    keys: Tensor,
    values: Tensor,
    weight: float | Tensor,
    *,
    candidates: Tensor | None = None,
    use_value_norm: bool = True,
    eps: float = 1e-8,
    key_mask: Tensor | None = None,
) -> Tensor:
    """MixKV score: importance mixed with key diversity per KV head.

    With ``a`` the host importance, ``L`` selectable tokens and all statistics taken over the candidate tokens:

    1. ``div = minmax(key_diversity(keys, L), eps)``, then ``div *= mean(a) / (mean(div) + eps)``.
    2. ``vn = minmax(value_norms(values)[:L])`` (no eps; a constant slice gives zeros), then
       ``vn *= mean(a) / (mean(vn) + eps)``.
    3. ``importance = a + vn`` (or ``a`` when ``use_value_norm=False``).
    4. ``score = w * div + (1 - w) * importance``.

    The score-scale quirk of the official MixKV code is kept on purpose: ``div`` and ``vn`` are each scaled to the
    mean of ``a``, so ``mean(importance) ~= 2 mean(a)`` and the effective diversity:importance ratio is
    ``w : 2(1 - w)``, not ``w : (1 - w)``. The ``+ eps`` in the scale denominators is also the official code's.

    Guarantees: with ``weight=0`` and ``use_value_norm=False`` the score equals ``a`` on the candidates (same
    ranking as the host). With ``weight=1`` it is a positive multiple of min-max normalised diversity, so it ranks
    exactly like :func:`key_diversity` whenever ``mean(a) > 0``.

    Parameters
    ----------
    attention : Tensor
        ``(B, Hkv, L)`` non-negative host importance, e.g. :func:`snapkv_scores`.
    keys, values : Tensor
        ``(B, Hkv, N, D)`` post-RoPE keys and values of the whole cache, ``N >= L``. The diversity mean key uses all
        ``N`` tokens (as the official MixKV code does).
    weight : float or Tensor
        Mixing weight in ``[0, 1]``: a float, ``(Hkv,)`` or ``(B, Hkv)``, e.g. :func:`redundancy_weight`.
    candidates : Tensor, optional
        Bool mask of the selectable tokens, ``(L,)`` or broadcastable to ``(B, Hkv, L)``; ``None`` means all ``L``.
    use_value_norm : bool
        Add the aligned value norm to the importance (MixKV default).
    eps : float
        Diversity min-max epsilon and scale-denominator epsilon (official: ``1e-8``).
    key_mask : Tensor, optional
        ``(B, 1 or Hkv, N)`` bool: real keys (padding excluded from the mean key).

    Returns
    -------
    Tensor
        ``(B, Hkv, L)`` float32; non-candidates are ``-inf``.

    References
    ----------
    MixKV, arXiv 2510.20707; KeyDiff, arXiv 2504.15364.
    """
    _check_tensor("attention", attention, 3)
    _check_tensor("keys", keys, 4)
    _check_tensor("values", values, 4)
    _check_same_shape("keys", keys, "values", values)
    batch, heads, length = attention.shape
    if keys.shape[:2] != (batch, heads):
        raise ValueError(
            f"attention (B, Hkv, L) = {tuple(attention.shape)} does not match keys (B, Hkv, N, D) = "
            f"{tuple(keys.shape)} in batch or KV heads"
        )
    if length > keys.shape[2]:
        raise ValueError(f"attention covers {length} tokens but the cache holds only N = {keys.shape[2]}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    w = _head_weight(weight, batch, heads, attention.device)  # (B, Hkv, 1)

    if candidates is None:
        mask = torch.ones(batch, heads, length, dtype=torch.bool, device=attention.device)
    else:
        if not isinstance(candidates, Tensor) or candidates.dtype != torch.bool:
            raise TypeError("candidates must be a bool tensor (True = selectable)")
        try:
            mask = torch.broadcast_to(candidates.to(attention.device), (batch, heads, length))
        except RuntimeError as error:
            raise ValueError(
                f"candidates of shape {tuple(candidates.shape)} must be (L={length},) or broadcast to "
                f"{(batch, heads, length)}"
            ) from error

    importance = attention.float()
    on_candidates = torch.where(mask, importance, torch.zeros_like(importance))
    if not bool(torch.isfinite(on_candidates).all()) or bool((on_candidates < 0).any()):
        raise ValueError("attention must be finite and non-negative on the candidate tokens (e.g. snapkv_scores)")
    target_mean = _masked_mean(importance, mask)  # (B, Hkv, 1)

    diversity = minmax(key_diversity(keys, length, key_mask), eps=eps, mask=mask)  # (B, Hkv, L)
    diversity = diversity * (target_mean / (_masked_mean(diversity, mask) + eps))
    if use_value_norm:
        norms = minmax(value_norms(values)[..., :length], eps=0.0, mask=mask)  # (B, Hkv, L)
        norms = norms * (target_mean / (_masked_mean(norms, mask) + eps))
        importance = importance + norms

    score = w * diversity + (1.0 - w) * importance
    return score.masked_fill(~mask, float("-inf"))
