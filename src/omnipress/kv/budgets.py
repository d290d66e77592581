"""Budget allocation for KV-cache compression hosts, and top-k selection inside the budgets.

A *capacity* is the number of tokens a layer or KV head **selects** from its selectable prefix (``L = N - W``
tokens), on top of the ``W`` observation-window tokens that are always kept. With a per-head budget ``B`` that
includes the window (the papers' convention), the base capacity is ``B - W``.

Rules follow the official MixKV code (https://github.com/xuyang-liu16/MixKV), which inherits them from the hosts:
PyramidKV (arXiv 2406.02069), AdaKV (arXiv 2407.11550), SparseMM (arXiv 2506.05344). By default
(``exact_total=True``) the allocations keep exactly the nominal total (largest-remainder rounding, see `apportion`);
``exact_total=False`` reproduces the official code's per-capacity rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

__all__ = [
    "RaggedIndices",
    "adakv_capacities",
    "apportion",
    "pyramid_capacities",
    "sparsemm_capacities",
    "top_capacity_indices",
    "top_uniform_indices",
]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_ratio(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_scores(scores: object) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.ndim != 3:
        raise ValueError(f"scores must have shape (batch, kv_heads, L), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    return scores


# ---------------------------------------------------------------------------------------------------------------
# capacities
#
# Exact totals. The official MixKV/PyramidKV/AdaKV/SparseMM code rounds every capacity on its own (a floored pyramid
# step, `round` per head), so the kept total drifts from the nominal one (PyramidKV on SmolLM2 at budget 128:
# 11,970 entries kept for 11,520 nominal). By default (`exact_total=True`) each allocation is first computed exactly
# as rational numbers whose sum is the nominal total, then rounded by the largest-remainder rule: every capacity gets
# the floor of its ideal value and the leftover units go to the largest fractional parts (ties: the lower index).
# `exact_total=False` reproduces the official rounding bit for bit.


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _exact(value: float | int) -> Fraction:
    """A user number as the decimal it was written as (0.2 -> 1/5, not the nearest binary float)."""
    return Fraction(value) if isinstance(value, int) else Fraction(repr(float(value)))


def apportion(ideal: Sequence[Fraction | int], total: int, upper: Sequence[int] | None = None) -> list[int]:
    """Integers as close as possible to ``ideal`` that sum to ``total`` (largest-remainder rounding).

    With ``upper``, entry ``i`` is at most ``upper[i]``: an entry whose ideal value exceeds its bound is set to the
    bound, and what it loses is shared by the other entries in proportion to their ideal values (repeated until no
    entry exceeds its bound). The result then sums to ``min(total, sum(upper))``, the closest reachable total. Every
    entry gets the floor of its (adjusted) ideal value; the remaining units go one each to the entries with the
    largest fractional parts, ties to the lower index. Deterministic and exact (rational arithmetic).

    Parameters
    ----------
    ideal : sequence of Fraction or int
        Non-negative ideal values whose sum is ``total``.
    total : int
        Target sum.
    upper : sequence of int, optional
        Per-entry upper bounds.

    Returns
    -------
    list of int
    """
    values = [Fraction(v) for v in ideal]
    n = len(values)
    if upper is not None:
        if len(upper) != n:
            raise ValueError(f"upper has {len(upper)} entries for {n} values")
        total = min(total, sum(upper))
        fixed = [False] * n
        while True:
            over = [i for i in range(n) if not fixed[i] and values[i] > upper[i]]
            if not over:
                break
            for i in over:
                fixed[i] = True
                values[i] = Fraction(upper[i])
            rest = [i for i in range(n) if not fixed[i]]
            if not rest:
                break
            remaining = total - sum(upper[i] for i in range(n) if fixed[i])
            mass = sum(values[i] for i in rest)
            for i in rest:
                values[i] = values[i] * remaining / mass if mass > 0 else Fraction(remaining, len(rest))
    out = [math.floor(v) for v in values]
    left = total - sum(out)
    for i in sorted(range(n), key=lambda i: (out[i] - values[i], i)):  # largest fractional part first
        if left <= 0:
            break
        if upper is None or out[i] < upper[i]:
            out[i] += 1
            left -= 1
    return out


def pyramid_capacities(
    base: int, num_layers: int, n_valid: int, beta: int = 20, *, exact_total: bool = True
) -> list[int]:
    """PyramidKV layer capacities: lower layers keep more, linear decay.

    ``min = base // beta``, ``max = 2 * base - min``; if ``max >= n_valid`` then ``max = n_valid`` and
    ``min = 2 * base - max``. Layer ``l`` ideally gets ``max - l * (max - min) / (num_layers - 1)``, whose mean is
    exactly ``base``.

    - ``exact_total=True`` (default): the ideal values rounded by the largest-remainder rule (see `apportion`), so
      the capacities sum to exactly ``num_layers * base`` and stay a linear decay up to one unit.
    - ``exact_total=False``: the official PyramidKV/MixKV code, ``step = (max - min) // (num_layers - 1)`` and layer
      ``l`` gets ``max - l * step``. The floored step makes the mean exceed ``base`` (``base=32``, 28 layers: 63,
      61, ..., 9, mean 36).

    Every capacity is finally clamped to ``[0, n_valid]``. That changes nothing when ``base <= n_valid``; when
    ``base > n_valid`` every layer keeps all ``n_valid`` tokens, the closest reachable total (the hosts keep the
    whole cache anyway, as the official code does). With ``num_layers == 1`` the single layer gets
    ``min(base, n_valid)``.

    Parameters
    ----------
    base : int
        Average capacity per layer, ``budget - window``.
    num_layers : int
        Number of decoder layers.
    n_valid : int
        Selectable tokens ``L = N - W``.
    beta : int
        Ratio between the base and the smallest capacity (PyramidKV default 20).
    exact_total : bool
        Sum to exactly ``num_layers * base`` (default) or round as the official code.

    Returns
    -------
    list of int
        ``num_layers`` capacities, layer 0 first.

    References
    ----------
    PyramidKV, arXiv 2406.02069.
    """
    _check_int("base", base, 0)
    _check_int("num_layers", num_layers, 1)
    _check_int("n_valid", n_valid, 0)
    _check_int("beta", beta, 1)
    _check_bool("exact_total", exact_total)
    if num_layers == 1:
        return [min(base, n_valid)]
    smallest = base // beta
    largest = 2 * base - smallest
    if largest >= n_valid:
        largest = n_valid
        smallest = 2 * base - largest
    if exact_total:
        span = num_layers - 1
        ideal = [Fraction(largest * span - layer * (largest - smallest), span) for layer in range(num_layers)]
        capacities = apportion(ideal, num_layers * base)
    else:
        step = (largest - smallest) // (num_layers - 1)
        capacities = [largest - layer * step for layer in range(num_layers)]
    return [min(max(c, 0), n_valid) for c in capacities]


def adakv_capacities(
    scores: Tensor,
    base: int,
    *,
    floor_ratio: float = 0.2,
    normalize: bool = True,
    candidates: Tensor | None = None,
    exact_total: bool = True,
) -> Tensor:
    """AdaKV head capacities inside one layer, from the host's attention scores.

    ``floor = floor(floor_ratio * base)``. Each head's scores are sorted in descending order; with ``normalize`` they
    are multiplied by ``(sum of the head's top-base scores) / (sum of all its scores)``. Over all heads of a batch
    row, the ``Hkv * base`` largest scores are taken and ``cnt_h`` counts those of head ``h``. Ties in the global
    ranking go to the lower head index, then the higher-ranked token. Then:

    - ``exact_total=True`` (default): head ``h`` ideally gets ``cnt_h * (1 - floor_ratio) + floor_ratio * base``
      (the same split, the guaranteed share not floored), which sums to exactly ``Hkv * base``; these are rounded by
      the largest-remainder rule (see `apportion`), so every row's capacities sum to ``Hkv * base`` and every head
      keeps at least ``floor``. A head can keep at most its competing tokens; what a capped head cannot use goes to
      the other heads, so the total stays exact unless the row has fewer than ``Hkv * base`` competing tokens (then
      every head keeps all of them). ``floor_ratio`` is read as the decimal it was written as (0.2 is 1/5).
    - ``exact_total=False``: the official AdaKV/MixKV code, ``c_h = round(cnt_h * (1 - floor_ratio) + floor)``
      (round half to even, as ``torch.round``), clamped to the number of competing tokens; the per-layer total is
      ``Hkv * base`` only up to rounding (each head may be off by up to 0.5 plus ``base * floor_ratio - floor``), and
      the number of globally picked scores is ``min(Hkv * base, fewest competing tokens of any row)``.

    Parameters
    ----------
    scores : Tensor
        ``(B, Hkv, L)`` non-negative scores (attention only; MixKV does not change the split).
    base : int
        Average capacity per head, ``budget - window``.
    floor_ratio : float
        ``alpha``, the share of ``base`` every head is guaranteed.
    normalize : bool
        Apply the per-head top-base mass normalisation.
    candidates : Tensor, optional
        Bool ``(L,)`` (or broadcastable to ``(B, Hkv, L)``) mask; only these positions compete and count in the
        sums. ``None`` means all ``L``.
    exact_total : bool
        Sum to exactly ``Hkv * base`` per row (default) or round as the official code.

    Returns
    -------
    Tensor
        ``(B, Hkv)`` long capacities in ``[0, number of candidates]``.

    References
    ----------
    AdaKV, arXiv 2407.11550.
    """
    _check_scores(scores)
    _check_int("base", base, 0)
    alpha = _check_ratio("floor_ratio", floor_ratio)
    _check_bool("exact_total", exact_total)
    batch, heads, length = scores.shape
    if candidates is None:
        mask = torch.ones(batch, heads, length, dtype=torch.bool, device=scores.device)
    else:
        if not isinstance(candidates, Tensor) or candidates.dtype != torch.bool:
            raise TypeError("candidates must be a bool tensor (True = competes)")
        try:
            mask = torch.broadcast_to(candidates.to(scores.device), scores.shape)
        except RuntimeError as error:
            raise ValueError(
                f"candidates of shape {tuple(candidates.shape)} do not broadcast to scores {tuple(scores.shape)}"
            ) from error
    values = scores.double()
    if not bool(torch.isfinite(values[mask]).all()) or bool((values[mask] < 0).any()):
        raise ValueError("scores must be finite and non-negative on the candidate tokens")

    floor = math.floor(alpha * base)
    available = mask.sum(dim=-1)  # (B, Hkv)
    # Non-candidates sort last (-inf) and add nothing to the sums.
    ranked = torch.where(mask, values, torch.full_like(values, float("-inf")))
    ranked = torch.sort(ranked, dim=-1, descending=True, stable=True).values  # (B, Hkv, L)
    if normalize:
        finite = torch.where(torch.isfinite(ranked), ranked, torch.zeros_like(ranked))
        top_mass = finite[..., :base].sum(dim=-1, keepdim=True)
        total_mass = finite.sum(dim=-1, keepdim=True)
        ratio = torch.where(total_mass > 0, top_mass / total_mass.clamp_min(1e-300), torch.zeros_like(total_mass))
        ranked = torch.where(torch.isfinite(ranked), ranked * ratio, ranked)

    flat = ranked.reshape(batch, heads * length)  # (B, Hkv*L), head-major
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices  # (B, Hkv*L)
    if not exact_total:
        picked = min(heads * base, int(available.sum(dim=-1).min().item()) if batch > 0 else 0)
        counts = torch.zeros(batch, heads, dtype=torch.long, device=scores.device)
        if picked > 0:
            counts = counts.scatter_add(-1, order[:, :picked] // length, torch.ones_like(order[:, :picked]))
        capacities = torch.round(counts.double() * (1.0 - alpha) + floor).long()
        return torch.minimum(capacities, available)

    share = _exact(alpha)
    rows = []
    for row in range(batch):
        upper = available[row].tolist()
        picked = min(heads * base, sum(upper))
        counts = torch.bincount(order[row, :picked] // length, minlength=heads).tolist()
        ideal = [(1 - share) * c + share * base for c in counts]  # sums to Hkv * base when picked = Hkv * base
        rows.append(apportion(ideal, heads * base, upper))
    return torch.tensor(rows, dtype=torch.long, device=scores.device).view(batch, heads)


def sparsemm_capacities(
    head_scores: Tensor,
    base: int,
    *,
    min_ratio: float = 0.1,
    n_valid: int | None = None,
    num_kv_heads: int | None = None,
    exact_total: bool = True,
) -> Tensor:
    """SparseMM per-(layer, KV head) capacities from offline visual-head scores.

    Scores are normalised to sum to 1 over all (layer, head) entries; ``min = floor(base * min_ratio)`` and entry
    ``(l, h)`` ideally gets ``score * (base - min) * num_layers * Hkv + min``, whose sum over the model is
    ``num_layers * Hkv * base``.

    - ``exact_total=True`` (default): the ideal values (scores taken exactly as their float values) are rounded by
      the largest-remainder rule over the whole model (see `apportion`), so the capacities sum to exactly
      ``num_layers * Hkv * base``. With ``n_valid`` an entry is capped at ``n_valid`` and what it cannot use goes to
      the other entries in proportion to their ideal values: the total stays exact unless
      ``base > n_valid`` (then every entry keeps ``n_valid``).
    - ``exact_total=False``: the official SparseMM/MixKV code, ``c = round(ideal)`` (half to even) per entry, then
      clamped to ``n_valid``: the total is exact only up to rounding, and what a clamped entry loses is lost.

    Parameters
    ----------
    head_scores : Tensor
        ``(num_layers, Hkv)`` non-negative scores, or ``(num_layers, Hq)`` per query head together with
        ``num_kv_heads`` (then summed over each GQA group, ``repeat_kv`` layout, as the official code does).
    base : int
        Average capacity per head, ``budget - window``.
    min_ratio : float
        Share of ``base`` every head is guaranteed (SparseMM ``RATIO``, default 0.1).
    n_valid : int, optional
        Selectable tokens ``L``; capacities are clamped to it when given.
    num_kv_heads : int, optional
        Sum query-head scores into this many KV heads first.
    exact_total : bool
        Sum to exactly ``num_layers * Hkv * base`` (default) or round as the official code.

    Returns
    -------
    Tensor
        ``(num_layers, Hkv)`` long capacities.

    References
    ----------
    SparseMM, arXiv 2506.05344.
    """
    if not isinstance(head_scores, Tensor):
        raise TypeError(f"head_scores must be a torch.Tensor, got {type(head_scores).__name__}")
    if head_scores.ndim != 2:
        raise ValueError(f"head_scores must have shape (num_layers, heads), got {tuple(head_scores.shape)}")
    _check_int("base", base, 0)
    ratio = _check_ratio("min_ratio", min_ratio)
    _check_bool("exact_total", exact_total)
    if n_valid is not None:
        _check_int("n_valid", n_valid, 0)
    scores = head_scores.double()
    if num_kv_heads is not None:
        _check_int("num_kv_heads", num_kv_heads, 1)
        if scores.shape[1] % num_kv_heads != 0:
            raise ValueError(f"heads ({scores.shape[1]}) must be a multiple of num_kv_heads ({num_kv_heads})")
        scores = scores.reshape(scores.shape[0], num_kv_heads, -1).sum(dim=-1)  # (num_layers, Hkv)
    if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any()):
        raise ValueError("head_scores must be finite and non-negative")
    total = scores.sum()
    if not total > 0:
        raise ValueError("head_scores must have a positive sum")
    num_layers, heads = scores.shape
    smallest = math.floor(base * ratio)
    spread = (base - smallest) * num_layers * heads
    if not exact_total:
        capacities = torch.round(scores / total * spread + smallest).long()
        return capacities if n_valid is None else capacities.clamp_max(n_valid)
    exact = [Fraction(x) for x in scores.reshape(-1).tolist()]
    mass = sum(exact)
    ideal = [x / mass * spread + smallest for x in exact]
    upper = None if n_valid is None else [n_valid] * len(ideal)
    flat = apportion(ideal, num_layers * heads * base, upper)
    return torch.tensor(flat, dtype=torch.long, device=head_scores.device).view(num_layers, heads)


# ---------------------------------------------------------------------------------------------------------------
# selection


@dataclass(frozen=True)
class RaggedIndices:
    """Per-(batch, head) selected positions of different lengths, stored flat (varlen layout).

    ``flat`` holds the positions of row ``(0, 0)``, then ``(0, 1)``, ..., ``(B-1, Hkv-1)``; each row is sorted in
    ascending position. ``lengths[b, h]`` is the row's length. ``indices[b][h]`` gives one row, so the object reads
    like a ``list[list[Tensor]]``.

    Attributes
    ----------
    flat : Tensor
        ``(sum of lengths,)`` long positions.
    lengths : Tensor
        ``(B, Hkv)`` long.
    """

    flat: Tensor
    lengths: Tensor

    @property
    def offsets(self) -> Tensor:
        """``(B * Hkv + 1,)`` long cumulative lengths (``cu_seqlens``): row ``r`` is ``flat[off[r]:off[r+1]]``."""
        flat_lengths = self.lengths.reshape(-1)
        return torch.cat([flat_lengths.new_zeros(1), torch.cumsum(flat_lengths, dim=0)])

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def __getitem__(self, batch_index: int) -> list[Tensor]:
        if not -len(self) <= batch_index < len(self):
            raise IndexError(f"batch index {batch_index} out of range for batch size {len(self)}")
        batch_index %= len(self)
        heads = self.lengths.shape[1]
        offsets = self.offsets.tolist()
        start = batch_index * heads
        return [self.flat[offsets[start + h] : offsets[start + h + 1]] for h in range(heads)]

    def __iter__(self) -> Iterator[list[Tensor]]:
        return (self[b] for b in range(len(self)))

    def to_lists(self) -> list[list[Tensor]]:
        """Plain ``list[list[Tensor]]`` (batch, then head)."""
        return list(self)

    def padded(self, fill_value: int = -1) -> tuple[Tensor, Tensor]:
        """``(B, Hkv, max_len)`` positions padded with ``fill_value`` on the right, and the matching bool mask."""
        batch, heads = self.lengths.shape
        width = int(self.lengths.max().item()) if self.lengths.numel() else 0
        valid = torch.arange(width, device=self.lengths.device) < self.lengths.unsqueeze(-1)  # (B, Hkv, width)
        out = torch.full((batch, heads, width), fill_value, dtype=torch.long, device=self.flat.device)
        return out.masked_scatter(valid, self.flat), valid


def _ranking(scores: Tensor) -> Tensor:
    """Positions sorted by score, descending; ties go to the lower position (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def top_capacity_indices(scores: Tensor, capacities: Tensor) -> RaggedIndices:
    """Top-``c_h`` positions of each (batch, head) row, sorted by ascending position.

    Ties are broken by the lower position first. Positions scored ``-inf`` (non-candidates) are never selected:
    a row whose capacity exceeds its number of scored positions gets fewer, and ``lengths`` says how many.

    Parameters
    ----------
    scores : Tensor
        ``(B, Hkv, L)`` scores, higher = keep.
    capacities : Tensor
        ``(B, Hkv)`` integer capacities in ``[0, L]`` (e.g. :func:`adakv_capacities`).

    Returns
    -------
    RaggedIndices
        ``indices[b][h]`` is a 1-D long tensor of positions in ``[0, L)``.
    """
    _check_scores(scores)
    if not isinstance(capacities, Tensor):
        raise TypeError(f"capacities must be a torch.Tensor, got {type(capacities).__name__}")
    if capacities.shape != scores.shape[:2]:
        raise ValueError(f"capacities must have shape {tuple(scores.shape[:2])}, got {tuple(capacities.shape)}")
    if capacities.is_floating_point() or capacities.is_complex() or capacities.dtype == torch.bool:
        raise TypeError(f"capacities must be an integer tensor, got {capacities.dtype}")
    length = scores.shape[-1]
    capacities = capacities.to(device=scores.device, dtype=torch.long)
    if bool((capacities < 0).any()) or bool((capacities > length).any()):
        raise ValueError(f"capacities must lie in [0, L={length}]")
    order = _ranking(scores)  # (B, Hkv, L)
    ranked_scores = scores.gather(-1, order)
    rank = torch.arange(length, device=scores.device)
    chosen = (rank < capacities.unsqueeze(-1)) & (ranked_scores > float("-inf"))  # (B, Hkv, L) in rank space
    keep = torch.zeros_like(chosen).scatter(-1, order, chosen)  # (B, Hkv, L) in position space
    flat = keep.nonzero(as_tuple=True)[-1]  # row-major: ascending positions inside each row
    return RaggedIndices(flat=flat, lengths=keep.sum(dim=-1))


def top_uniform_indices(scores: Tensor, k: int) -> Tensor:
    """Top-``k`` positions of every (batch, head) row, sorted by ascending position (uniform budget fast path).

    Ties are broken by the lower position first. All rows get exactly ``k`` positions, so ``-inf`` entries are
    taken if a row has fewer than ``k`` finite scores; keep ``k`` within the candidate count.

    Parameters
    ----------
    scores : Tensor
        ``(B, Hkv, L)`` scores, higher = keep.
    k : int
        Number of positions per row, ``0 <= k <= L``.

    Returns
    -------
    Tensor
        ``(B, Hkv, k)`` long positions.
    """
    _check_scores(scores)
    length = scores.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= length:
        raise ValueError(f"k must be an int in [0, L={length}], got {k!r}")
    return _ranking(scores)[..., :k].sort(dim=-1).values
