"""Prefill-time KV-cache compression: the press base classes.

A press scores the prompt's KV entries of every layer once, at prefill, and keeps per KV head the window, the tokens
its `scope` protects and the best-ranked of the rest, up to a per-head capacity. Subclasses implement `score` (and
optionally `capacities` for head-/layer-wise budgets and `rank` for a ranking other than the score, which MixKV
uses). Applying a press is a reversible context manager::

    press = SnapKV(budget=128)
    with press(model):
        out = model.generate(**inputs, max_new_tokens=32)
    print(press.report)

Budget conventions (docs/architecture.md): `budget` is the number of KV entries kept per head per layer, observation
window included (the papers' convention); `compression_ratio` is the fraction removed (kvpress's convention).
Exactly one is given. `scope` picks what may be evicted (`"all"`, `"vision"`, `"image"`, `"video"`, `"audio"`);
everything outside the scope is kept *on top of* the budget, so with a media scope `budget` = window + kept media
tokens and `compression_ratio` = fraction of the in-scope tokens removed. When the budget already covers every
evictable token the cache is left untouched (the report says so), or a `ValueError` is raised with `strict=True`.

Batches: every row of a (left-padded) batch is compressed with its own spans, candidates and capacity; padding is
never kept and never counted. A `KVPress` is an omnipress `Method` (stage "kv"): it composes with encoder and token
methods, and at most one KV press is active on a model at a time.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from ..core.method import Method
from ..spans import SCOPES, ModalitySpans
from .budgets import RaggedIndices, top_capacity_indices, top_uniform_indices
from .report import CompressionReport

if TYPE_CHECKING:
    from ..core.session import Listener, ModelSession


@dataclass(frozen=True)
class BudgetConfig:
    """How much a press keeps; validated once, shared by hosts and wrappers."""

    budget: int | None
    compression_ratio: float | None
    scope: str
    window: int
    strict: bool

    def __post_init__(self) -> None:
        if (self.budget is None) == (self.compression_ratio is None):
            raise ValueError(
                "give exactly one of `budget` (entries kept per KV head) and `compression_ratio` "
                f"(fraction removed); got budget={self.budget}, compression_ratio={self.compression_ratio}"
            )
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
                raise ValueError(f"budget must be a positive integer, got {self.budget!r}")
            if self.budget < self.window:
                raise ValueError(
                    f"budget ({self.budget}) is smaller than the observation window ({self.window}); the budget "
                    "includes the window, so use budget >= window or a smaller window"
                )
        if self.compression_ratio is not None and not 0.0 <= self.compression_ratio < 1.0:
            raise ValueError(
                f"compression_ratio is the fraction removed and must lie in [0, 1), got {self.compression_ratio}"
            )
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; expected one of {SCOPES}")

    def capacity(self, n_scope: int, n_window_in_scope: int, n_candidates: int) -> int:
        """Base number of evictable tokens each head keeps (before head-/layer-wise reallocation)."""
        if self.budget is not None:
            c = self.budget - self.window
        else:
            assert self.compression_ratio is not None  # validated in __post_init__
            c = int(n_scope * (1.0 - self.compression_ratio)) - n_window_in_scope
        return max(0, min(c, n_candidates))


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding-time compression: every `every` new tokens, cut heads holding more than `budget` entries back to
    `budget` (the last `window` entries are always kept, and their queries score)."""

    budget: int
    every: int
    window: int

    def __post_init__(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"decode_budget must be a positive integer, got {self.budget!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"decode_every must be a positive integer, got {self.every!r}")
        if self.budget <= self.window:
            raise ValueError(
                f"decode_budget ({self.budget}) must exceed the observation window ({self.window}), "
                "which is always kept"
            )


@dataclass
class LayerInputs:
    """What a press sees for one decoder layer (all tensors post-RoPE).

    At prefill `query` `(batch, q_heads, N, dim)` holds every prompt query and `keys`/`values`
    `(batch, kv_heads, N, dim)` the prompt's entries. At decoding time (`decode_budget`) `query` holds the last
    `window` queries and `keys`/`values` a right-aligned copy of each head's cache (shorter heads padded on the left).

    Masks are `(batch, 1 or kv_heads, N)` bool (`(N,)` and `(batch, N)` are accepted and broadcast): `key_mask`
    marks real entries (False = padding), `candidates` the evictable ones, `protected` the ones always kept (window
    and out-of-scope tokens). Padding is neither, so it is never kept. `capacity` `(batch,)` is each row's base
    number of candidates kept per head (an int means the same for every row). `groups` `(batch,)` maps every row to
    a representative row with identical inputs (beam search copies a prompt `num_beams` times): duplicates take
    their representative's selection, so the beams of a prompt share one layout. `spans` are the rows' modality
    spans at prefill (presses that treat media specially, such as AudioKV, read them). `phase` is `"decode"` for
    decoding-time compression (layers then hold different numbers of entries; layer-wise hosts allocate from the
    budget alone).
    """

    layer_idx: int
    num_layers: int
    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    scaling: float
    window: int
    candidates: torch.Tensor
    protected: torch.Tensor
    capacity: torch.Tensor | int
    key_mask: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    phase: str = "prefill"
    spans: list[ModalitySpans] | None = None  # each row's modality spans at prefill (None at decoding time)

    def __post_init__(self) -> None:
        if self.phase not in ("prefill", "decode"):
            raise ValueError(f"phase must be 'prefill' or 'decode', got {self.phase!r}")
        bsz, heads, n = self.keys.shape[:3]
        device = self.keys.device
        self.candidates = _as_mask("candidates", self.candidates, bsz, heads, n, device)
        self.protected = _as_mask("protected", self.protected, bsz, heads, n, device)
        if self.key_mask is None:
            self.key_mask = torch.ones(bsz, 1, n, dtype=torch.bool, device=device)
        else:
            self.key_mask = _as_mask("key_mask", self.key_mask, bsz, heads, n, device)
        if isinstance(self.capacity, int):
            self.capacity = torch.full((bsz,), self.capacity, dtype=torch.long, device=device)
        else:
            self.capacity = torch.as_tensor(self.capacity, device=device).long().reshape(bsz)

    @property
    def window_queries(self) -> torch.Tensor:
        """The last `window` queries `(batch, q_heads, window, dim)`."""
        return self.query[:, :, self.query.shape[2] - self.window :]

    @property
    def seq_len(self) -> int:
        return self.keys.shape[2]

    @property
    def padding_mask(self) -> torch.Tensor | None:
        """`key_mask` when some entry is padding, else None (the scoring functions' exact unpadded path)."""
        return None if bool(self.key_mask.all()) else self.key_mask

    def real_index(self) -> torch.Tensor:
        """`(batch, 1 or kv_heads, N)` index of every entry among its head's real entries (-1 on padding)."""
        return torch.cumsum(self.key_mask.long(), dim=-1) - 1

    def candidate_count(self) -> torch.Tensor:
        """`(batch, 1 or kv_heads)` number of candidates."""
        return self.candidates.sum(-1)


def _as_mask(name: str, mask: torch.Tensor, bsz: int, heads: int, n: int, device: torch.device) -> torch.Tensor:
    mask = torch.as_tensor(mask, device=device)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor")
    if mask.dim() == 1:
        mask = mask.view(1, 1, -1).expand(bsz, 1, -1)
    elif mask.dim() == 2:
        mask = mask.unsqueeze(1)
    if mask.dim() != 3 or mask.shape[0] != bsz or mask.shape[1] not in (1, heads) or mask.shape[2] != n:
        raise ValueError(f"{name} must broadcast to ({bsz}, 1 or {heads}, {n}), got {tuple(mask.shape)}")
    return mask


class KVPress(Method):
    """Base of every KV press: scoring interface, token selection and the `with press(model):` context.

    Subclasses implement `score` (and optionally `capacities` for head-/layer-wise budgets and `rank` for a ranking
    other than the score, which MixKV uses).
    """

    stage: ClassVar[str] = "kv"
    report: CompressionReport | None = None

    @property
    @abstractmethod
    def budget_config(self) -> BudgetConfig:
        """The press's budget, ratio, scope and window."""

    @property
    def decoding(self) -> DecodingConfig | None:
        """Decoding-time compression settings, or None (compress the prompt only)."""
        return None

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def score(self, layer: LayerInputs) -> torch.Tensor:
        """Importance of every entry, `(batch, kv_heads, N)`, higher = keep."""

    def capacities(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        """Candidates kept per head, `(batch, kv_heads)` long. Default: each row's `layer.capacity` for every head."""
        bsz, heads = scores.shape[:2]
        return layer.capacity.view(bsz, 1).expand(bsz, heads).clone()

    def rank(self, layer: LayerInputs, scores: torch.Tensor) -> torch.Tensor:
        """Ranking used to pick tokens inside each head's capacity. Default: the scores themselves."""
        return scores

    def prioritize(self, layer: LayerInputs, ranks: torch.Tensor, capacities: torch.Tensor) -> torch.Tensor:
        """Last say over the `(batch, kv_heads, N)` ranks once each head's capacity is known (AudioKV's temporal
        coverage). Default: unchanged."""
        return ranks

    def keep_indices(self, layer: LayerInputs) -> torch.Tensor | RaggedIndices:
        """Positions kept per head, ascending: a `(batch, kv_heads, k)` tensor when every head keeps `k` entries,
        else `RaggedIndices` (flat positions plus per-head lengths)."""
        scores = self.score(layer)
        bsz, heads, _ = scores.shape
        n_cand = layer.candidate_count().expand(bsz, heads)
        caps = torch.minimum(self.capacities(layer, scores).clamp_min(0), n_cand)
        ranks = self.rank(layer, scores).float().masked_fill(~layer.candidates, float("-inf"))
        ranks = self.prioritize(layer, ranks, caps)
        protected = layer.protected.expand(bsz, heads, -1)
        if layer.groups is not None:  # duplicated rows (beams) take their representative's selection
            ranks, caps, protected = ranks[layer.groups], caps[layer.groups], protected[layer.groups]
        return select_tokens(ranks, caps, protected)

    def attach(self, session: ModelSession) -> Listener:
        if session.adapter.is_encoder_decoder:  # Whisper: the press evicts the cross-attention cache's entries
            from .cross import CrossAttentionPressListener

            return CrossAttentionPressListener(self, session)
        from .session import PressListener

        return PressListener(self, session)


def select_tokens(
    ranks: torch.Tensor, capacities: torch.Tensor, protected: torch.Tensor
) -> torch.Tensor | RaggedIndices:
    """Keep, per head, the `capacities[b, h]` best-ranked entries plus every protected position.

    `ranks` `(batch, kv_heads, N)` with `-inf` on everything that is neither a candidate nor protected (padding
    included); `protected` broadcasts to `ranks`. Ties go to the earlier position. Returns ascending positions: a
    `(batch, kv_heads, k)` tensor when every head keeps `k` entries, else `RaggedIndices`.
    """
    protected = torch.broadcast_to(protected, ranks.shape)
    ranks = ranks.masked_fill(protected, float("inf"))
    capacities = capacities + protected.sum(-1)
    caps = capacities.reshape(-1)
    if bool((caps == caps[0]).all()):
        return top_uniform_indices(ranks, int(caps[0]))
    return top_capacity_indices(ranks, capacities)


@dataclass
class ScorerPress(KVPress):
    """A press configured by a budget or a ratio; subclasses implement `score`.

    `decode_budget` / `decode_every` add decoding-time compression (as kvpress's DecodingPress): every
    `decode_every` generated tokens, each head holding more than `decode_budget` entries is cut back to
    `decode_budget` by the same scoring, its last `window` entries (whose queries score) always kept. A long
    generation then never holds more than `decode_budget + decode_every` entries per head.
    """

    budget: int | None = None
    compression_ratio: float | None = None
    scope: str = "all"
    window: int = 0
    strict: bool = False
    decode_budget: int | None = None
    decode_every: int = 32

    def __post_init__(self) -> None:
        self._budget = BudgetConfig(self.budget, self.compression_ratio, self.scope, self.window, self.strict)
        self._decoding = (
            None if self.decode_budget is None else DecodingConfig(self.decode_budget, self.decode_every, self.window)
        )

    @property
    def budget_config(self) -> BudgetConfig:
        return self._budget

    @property
    def decoding(self) -> DecodingConfig | None:
        return self._decoding
